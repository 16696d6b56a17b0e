data "google_project" "this" {
  project_id = var.project_id
}

# Model weights: written by the chart's downloader Job, read through Cloud Storage FUSE.
resource "google_storage_bucket" "models" {
  project                     = var.project_id
  name                        = local.model_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  hierarchical_namespace {
    enabled = true
  }

  depends_on = [google_project_service.apis]
}

# The GCP identity of the chart's model-server ServiceAccount (model servers and downloader Job).
resource "google_service_account" "models" {
  project      = var.project_id
  account_id   = "${var.name}-models"
  display_name = "inferplane model servers and downloader"
}

resource "google_storage_bucket_iam_member" "models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.models.email}"
}

# Workload Identity: the Kubernetes ServiceAccount <release_name>-model-server acts as the GCP one
# (the chart annotates it with iam.gke.io/gcp-service-account).
resource "google_service_account_iam_member" "models_workload_identity" {
  service_account_id = google_service_account.models.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.namespace}/${var.release_name}-model-server]"
  depends_on         = [google_container_cluster.this]
}

# The Custom Metrics Stackdriver Adapter (HPA on managed-Prometheus metrics) reads Cloud Monitoring.
resource "google_project_iam_member" "metrics_adapter" {
  project = var.project_id
  role    = "roles/monitoring.viewer"
  member  = "principal://iam.googleapis.com/projects/${data.google_project.this.number}/locations/global/workloadIdentityPools/${var.project_id}.svc.id.goog/subject/ns/custom-metrics/sa/custom-metrics-stackdriver-adapter"
  depends_on = [google_container_cluster.this]
}
