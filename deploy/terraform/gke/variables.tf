variable "project_id" {
  description = "GCP project that holds the cluster, the model bucket and the service accounts."
  type        = string
}

variable "region" {
  description = "Region of the network, the bucket and the regional GKE Inference Gateway."
  type        = string
  default     = "us-central1"
}

variable "location" {
  description = "Cluster location: the region (regional cluster) or one zone (zonal cluster, cheaper)."
  type        = string
  default     = "us-central1"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "inferplane"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name: 2-21 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "release_channel" {
  description = "GKE release channel (GKE Inference Gateway needs a recent version)."
  type        = string
  default     = "RAPID"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel: RAPID, REGULAR or STABLE."
  }
}

variable "subnet_cidr" {
  description = "Primary range of the node subnet."
  type        = string
  default     = "10.128.0.0/20"
}

variable "pods_cidr" {
  description = "Secondary range for pods."
  type        = string
  default     = "10.64.0.0/14"
}

variable "services_cidr" {
  description = "Secondary range for services."
  type        = string
  default     = "10.68.0.0/20"
}

variable "proxy_only_cidr" {
  description = "Proxy-only subnet the regional Envoy-based load balancers (GKE Inference Gateway) use; allow it in the chart's networkPolicy.allowedCidrs."
  type        = string
  default     = "10.129.0.0/23"
}

variable "cpu_pool" {
  description = "The CPU node pool: picker, standalone Envoy, system pods, inferplane CPU servers."
  type = object({
    machine_type = string
    min_nodes    = number
    max_nodes    = number
  })
  default = {
    machine_type = "e2-standard-8"
    min_nodes    = 1
    max_nodes    = 4
  }
}

variable "gpu_node_pools" {
  description = "GPU node pools by name. GKE labels the nodes cloud.google.com/gke-accelerator=<accelerator> and taints them nvidia.com/gpu; the chart's modelServer.accelerator.type selects them."
  type = map(object({
    machine_type      = string
    accelerator       = string
    accelerator_count = number
    min_nodes         = number
    max_nodes         = number
    spot              = optional(bool, false)
    zones             = optional(list(string), [])
  }))
  default = {
    h100 = {
      machine_type      = "a3-highgpu-2g"
      accelerator       = "nvidia-h100-80gb"
      accelerator_count = 2
      min_nodes         = 0
      max_nodes         = 4
    }
  }

  validation {
    condition = alltrue([
      for pool in values(var.gpu_node_pools) : contains(["nvidia-l4", "nvidia-h100-80gb", "nvidia-h200-141gb"], pool.accelerator)
    ])
    error_message = "gpu_node_pools[*].accelerator: nvidia-l4, nvidia-h100-80gb or nvidia-h200-141gb."
  }
}

variable "tpu_node_pools" {
  description = "TPU slice node pools by name (e.g. v6e: ct6e-standard-8t with topology 2x4 is one 8-chip host)."
  type = map(object({
    machine_type = string
    tpu_topology = string
    node_count   = number
    spot         = optional(bool, false)
    zones        = optional(list(string), [])
  }))
  default = {}
}

variable "model_bucket_name" {
  description = "Name of the model bucket; empty: <project_id>-<name>-models."
  type        = string
  default     = ""
}

variable "namespace" {
  description = "Kubernetes namespace the chart is installed in (Workload Identity binding)."
  type        = string
  default     = "default"
}

variable "release_name" {
  description = "Helm release name; the chart's model-server ServiceAccount is <release_name>-model-server."
  type        = string
  default     = "inferplane"
}

variable "deletion_protection" {
  description = "Refuse to destroy the cluster."
  type        = bool
  default     = true
}
