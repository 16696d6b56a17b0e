output "cluster_name" {
  description = "Name of the GKE cluster."
  value       = google_container_cluster.this.name
}

output "cluster_location" {
  description = "Region or zone of the cluster."
  value       = google_container_cluster.this.location
}

output "get_credentials_command" {
  description = "Command that points kubectl and helm at the cluster."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.this.name} --location ${google_container_cluster.this.location} --project ${var.project_id}"
}

output "model_bucket" {
  description = "Bucket holding the model weights (gs:// URL)."
  value       = "gs://${google_storage_bucket.models.name}"
}

output "model_service_account_email" {
  description = "GCP service account of the model servers and the downloader (Workload Identity)."
  value       = google_service_account.models.email
}

output "proxy_only_cidr" {
  description = "Proxy-only subnet range: the source of GKE Inference Gateway traffic."
  value       = google_compute_subnetwork.proxy_only.ip_cidr_range
}

output "helm_values" {
  description = "Values for the inferplane chart that tie it to this infrastructure (helm install -f)."
  value = yamlencode({
    serviceAccounts = { modelServer = { gcpServiceAccount = google_service_account.models.email } }
    modelServer     = { gcsFuse = { enabled = true, bucket = google_storage_bucket.models.name } }
    networkPolicy   = { allowedCidrs = [google_compute_subnetwork.proxy_only.ip_cidr_range] }
    monitoring      = { podMonitoring = true }
    gateway         = { mode = "gke" }
  })
}
