terraform {
  required_providers {
    coder = {
      source = "coder/coder"
    }
    docker = {
      source = "kreuzwerker/docker"
    }
    local = {
      source = "hashicorp/local"
    }
  }
}

provider "coder" {}
provider "docker" {}

variable "base_image" {
  description = "Base image of the workspace (a registry cairn can reach from the provisioner)."
  type        = string
  default     = "ubuntu:24.04"
}

data "coder_provisioner" "me" {}
data "coder_workspace" "me" {}
data "coder_workspace_owner" "me" {}

locals {
  build_dir = "${path.module}/build"
  # Content hash of everything the build reads: any edit to the Dockerfile or a file it
  # copies changes this, and only that does.
  build_hash = sha1(join("", [for f in sort(fileset(local.build_dir, "**")) : filesha1("${local.build_dir}/${f}")]))
  image_name = "coder-${data.coder_workspace.me.id}:latest"
  iid_file   = "${path.module}/.cairn-${data.coder_workspace.me.id}.iid"
}

# Build with cairn instead of docker build. Runs on the provisioner host (as the user that
# runs `coder server` / the provisioner, e.g. `coder`, in the docker group).
resource "terraform_data" "workspace_image" {
  count = data.coder_workspace.me.start_count

  # Rebuild when the build directory's content changes, or when the image is gone from
  # Docker (the iid file is re-read on every plan; see the docker_image data source below).
  triggers_replace = [local.build_hash, local.image_name]

  provisioner "local-exec" {
    working_dir = local.build_dir
    # Plain, line-oriented logs go to stderr (Terraform shows them); the image ID goes to
    # the iid file. Do not reference sensitive values here: Terraform would hide all output.
    command = "cairn build . -t ${local.image_name} --build-arg BASE=${var.base_image} --ignore-file cairn.ignore --iidfile ${local.iid_file} --progress=plain"
  }
}

# Reference the image by ID so a changed image always replaces the container, and a missing
# one is rebuilt by the resource above rather than "pulled" from a registry that lacks it.
data "local_file" "image_id" {
  count      = data.coder_workspace.me.start_count
  filename   = local.iid_file
  depends_on = [terraform_data.workspace_image]
}

resource "coder_agent" "main" {
  arch           = data.coder_provisioner.me.arch
  os             = "linux"
  startup_script = "echo workspace ready"
}

resource "docker_container" "workspace" {
  count    = data.coder_workspace.me.start_count
  image    = trimspace(data.local_file.image_id[0].content)
  name     = "coder-${data.coder_workspace_owner.me.name}-${lower(data.coder_workspace.me.name)}"
  hostname = data.coder_workspace.me.name
  # The image never lives in a registry: never let the provider try to pull it.
  must_run   = true
  entrypoint = ["sh", "-c", replace(coder_agent.main.init_script, "/localhost|127\\.0\\.0\\.1/", "host.docker.internal")]
  env        = ["CODER_AGENT_TOKEN=${coder_agent.main.token}"]
  host {
    host = "host.docker.internal"
    ip   = "host-gateway"
  }
  lifecycle {
    replace_triggered_by = [terraform_data.workspace_image]
  }
}
