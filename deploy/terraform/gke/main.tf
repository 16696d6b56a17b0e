locals {
  model_bucket = var.model_bucket_name != "" ? var.model_bucket_name : "${var.project_id}-${var.name}-models"
  node_roles = [
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/artifactregistry.reader",
  ]
}

resource "google_project_service" "apis" {
  for_each           = toset(["compute.googleapis.com", "container.googleapis.com", "storage.googleapis.com", "iam.googleapis.com", "monitoring.googleapis.com"])
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_container_cluster" "this" {
  project  = var.project_id
  name     = var.name
  location = var.location

  network    = google_compute_network.vpc.id
  subnetwork = google_compute_subnetwork.nodes.id

  # Node pools are managed below; the default pool only exists while the cluster is created.
  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = var.deletion_protection

  # Dataplane V2 enforces the chart's NetworkPolicies.
  datapath_provider = "ADVANCED_DATAPATH"

  release_channel {
    channel = var.release_channel
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  # Gateway API (GKE Inference Gateway classes gke-l7-regional-external-managed / gke-l7-rilb).
  gateway_api_config {
    channel = "CHANNEL_STANDARD"
  }

  addons_config {
    gcs_fuse_csi_driver_config {
      enabled = true
    }
    http_load_balancing {
      disabled = false
    }
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
    managed_prometheus {
      enabled = true
    }
  }

  depends_on = [google_project_service.apis, google_compute_subnetwork.proxy_only]
}

resource "google_container_node_pool" "cpu" {
  project  = var.project_id
  name     = "cpu"
  cluster  = google_container_cluster.this.id
  location = var.location

  autoscaling {
    total_min_node_count = var.cpu_pool.min_nodes
    total_max_node_count = var.cpu_pool.max_nodes
  }

  node_config {
    machine_type    = var.cpu_pool.machine_type
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_container_node_pool" "gpu" {
  for_each = var.gpu_node_pools

  project        = var.project_id
  name           = each.key
  cluster        = google_container_cluster.this.id
  location       = var.location
  node_locations = length(each.value.zones) > 0 ? each.value.zones : null

  autoscaling {
    total_min_node_count = each.value.min_nodes
    total_max_node_count = each.value.max_nodes
  }

  node_config {
    machine_type    = each.value.machine_type
    spot            = each.value.spot
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    guest_accelerator {
      type  = each.value.accelerator
      count = each.value.accelerator_count
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }

    # Image streaming: multi-GB serving images start in seconds.
    gcfs_config {
      enabled = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_container_node_pool" "tpu" {
  for_each = var.tpu_node_pools

  project        = var.project_id
  name           = each.key
  cluster        = google_container_cluster.this.id
  location       = var.location
  node_locations = length(each.value.zones) > 0 ? each.value.zones : null
  node_count     = each.value.node_count

  placement_policy {
    type         = "COMPACT"
    tpu_topology = each.value.tpu_topology
  }

  node_config {
    machine_type    = each.value.machine_type
    spot            = each.value.spot
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name}-nodes"
  display_name = "inferplane GKE nodes"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset(local.node_roles)
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.nodes.email}"
}
