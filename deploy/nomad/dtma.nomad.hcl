# dtma under Nomad: a system job that runs the agent (image dtma/agent) once on every client
# node, with the Docker driver. docs/fleet.md ("Beyond one host") explains it; deploy/README.md
# lists what each client must provide.
#
# CHECKED, NOT VALIDATED BY NOMAD: no `nomad` binary can be installed where dtma is built, so
# `nomad job validate` has never run over this file. tests/unit/test_deploy_manifests.py parses
# it with python-hcl2 (HCL2 syntax) and asserts its structure: a system job, the docker driver,
# the Docker socket, the state and secrets mounts, the probes' paths, and that every DTMA_*
# setting below exists in dtma/config.py. Run `nomad job validate` before the first `job run`.
#
# What each client node must provide (client configuration, not this file):
#   - Docker, and the docker plugin allowed to bind the Docker socket:
#       plugin "docker" { config { volumes { enabled = true } } }
#   - two host volumes; the job is placed only on nodes that have both:
#       host_volume "dtma-state"   { path = "/var/lib/dtma" }        # a directory, 0700
#       host_volume "dtma-secrets" { path = "/run/dtma/secrets" }    # a TMPFS mounted there
#     The secrets directory must be a tmpfs on the host (deploy/systemd/run-dtma-secrets.mount
#     mounts one): the agent writes secret files there and the host's dockerd bind-mounts them
#     into the servers. The agent cannot mount it itself here (it has no CAP_SYS_ADMIN, and a
#     mount made inside its container would stay private to it), so without that tmpfs, file-mode
#     secrets are refused with a clear error (docs/secrets.md).
#   - the agent image on the node or in a registry it can pull from (`-var image=...`).
#   - a Nomad variable at nomad/jobs/dtma with the key controller_token (>= 16 characters), and
#     api_token (>= 16 characters): the bearer the controller uses to call this agent's API.
#       nomad var put nomad/jobs/dtma controller_token=... api_token=...
#     (Or Vault: see the comment at the templates.)

variable "image" {
  type        = string
  description = "The agent image. With the tag `latest` the docker driver always tries to pull; pin a version where no registry holds it."
  default     = "dtma/agent:latest"
}

variable "controller_url" {
  type        = string
  description = "DTMA_CONTROLLER_URL: where heartbeats go (http:// or https://)."
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

job "dtma" {
  type        = "system"
  datacenters = var.datacenters

  # One node at a time: the agent adopts its running containers on start (they keep serving
  # while it restarts), so an update costs no toolbox downtime, but one bad image should stop
  # at the first node. (Older Nomad versions enforce only max_parallel and stagger for system
  # jobs; the health fields then wait for nothing.)
  update {
    max_parallel     = 1
    min_healthy_time = "10s"
    healthy_deadline = "3m"
  }

  group "agent" {
    # The host's network namespace: the agent then reaches the servers on the toolboxes'
    # internal networks directly (as an agent on the host does) and joins no network, hence
    # DTMA_AGENT_CONTAINER=none below. Its API listens on the node's address only.
    network {
      mode = "host"
      port "api" {
        static = 8750
      }
    }

    volume "state" {
      type      = "host"
      source    = "dtma-state"
      read_only = false
    }

    volume "secrets" {
      type      = "host"
      source    = "dtma-secrets"
      read_only = false
    }

    # Restarts of the agent itself. Its toolbox containers are not its children: they keep
    # running while the agent restarts, and it adopts them again (docs/runbook.md).
    restart {
      attempts = 5
      interval = "10m"
      delay    = "10s"
      mode     = "delay"
    }

    task "agent" {
      driver = "docker"

      # SIGTERM, then up to 30 s to finish: the agent stops its loops and leaves its
      # containers running (as systemd's KillMode=process does in deploy/systemd/).
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      config {
        image        = var.image
        args         = ["serve"]
        network_mode = "host"

        # The host's engine: every toolbox container is started by the node's dockerd.
        volumes = ["/var/run/docker.sock:/var/run/docker.sock"]

        readonly_rootfs = true
        mount {
          type   = "tmpfs"
          target = "/tmp"
          tmpfs_options {
            size = 16777216
          }
        }
        # Root in the container, for the Docker socket and to chown each secret file to its
        # server's user; of root's capabilities only these three (as deploy/systemd/).
        cap_drop     = ["all"]
        cap_add      = ["chown", "dac_override", "fowner"]
        security_opt = ["no-new-privileges"]
      }

      volume_mount {
        volume      = "state"
        destination = "/var/lib/dtma"
      }

      # Mounted at the SAME path as on the host: with DTMA_AGENT_CONTAINER=none the agent hands
      # dockerd the path it writes to, so the two must be equal. host-to-task: a tmpfs mounted
      # on the host after the task started still shows inside; Docker wants the host's mount
      # shared or slave for that (systemd makes every mount shared; docs/fleet.md).
      volume_mount {
        volume           = "secrets"
        destination      = "/run/dtma/secrets"
        propagation_mode = "host-to-task"
      }

      env {
        DTMA_LISTEN          = "${NOMAD_ADDR_api}"
        DTMA_ADVERTISE_URL   = "http://${NOMAD_ADDR_api}"
        DTMA_STATE_DIR       = "/var/lib/dtma"
        DTMA_SECRETS_DIR     = "/run/dtma/secrets"
        DTMA_AGENT_CONTAINER = "none"
        DTMA_LOG_FORMAT      = "json"
        DTMA_CONTROLLER_URL  = var.controller_url
        # Labels from the node: its name, datacenter and region (values of Nomad's node
        # attributes; a node meta key works the same way: "zone=${meta.zone}", provided every
        # node sets it, or the agent stops at start with exit 2 naming DTMA_AGENT_LABELS).
        DTMA_AGENT_LABELS          = "node=${node.unique.name},dc=${node.datacenter},region=${node.region}"
        DTMA_CONTROLLER_TOKEN_FILE = "${NOMAD_SECRETS_DIR}/controller-token"
        DTMA_API_TOKEN_FILE        = "${NOMAD_SECRETS_DIR}/api-token"
        # VAULT_ADDR and DTMA_VAULT_ROLE_ID_FILE / DTMA_VAULT_SECRET_ID_FILE go here when toolboxes
        # use Vault secrets (docs/secrets.md); render those files with templates like the ones below.
      }

      # Tokens as files in the task's secrets directory (mode 0400: the agent refuses an API
      # token file that others may read), never in the environment, where `docker inspect`
      # would show them. With Vault instead of Nomad variables, add a `vault {}` block and use, e.g.,
      #   {{ with secret "secret/data/dtma/controller" }}{{ .Data.data.token }}{{ end }}
      # The agent reads the files at start; change_mode "restart" restarts it on a rotation.
      template {
        data        = "{{ with nomadVar \"nomad/jobs/dtma\" }}{{ .controller_token }}{{ end }}"
        destination = "secrets/controller-token"
        perms       = "0400"
        change_mode = "restart"
      }

      template {
        data        = "{{ with nomadVar \"nomad/jobs/dtma\" }}{{ .api_token }}{{ end }}"
        destination = "secrets/api-token"
        perms       = "0400"
        change_mode = "restart"
      }

      # Nomad-native service checks: liveness restarts the task after 3 failures in a row;
      # readiness (Docker reachable and state loaded) marks the service passing in Nomad's
      # catalog and gates the rolling update.
      service {
        provider = "nomad"
        name     = "dtma-agent"
        port     = "api"

        check {
          name     = "live"
          type     = "http"
          path     = "/v1/health"
          interval = "10s"
          timeout  = "2s"

          check_restart {
            limit = 3
            grace = "30s"
          }
        }

        check {
          name     = "ready"
          type     = "http"
          path     = "/v1/ready"
          interval = "10s"
          timeout  = "2s"
        }
      }

      # Measured: about 100 MB RSS idle (docs/benchmarks.md); memory_max lets it grow with its
      # toolboxes where the cluster enables memory oversubscription.
      resources {
        cpu        = 200
        memory     = 256
        memory_max = 512
      }
    }
  }
}
