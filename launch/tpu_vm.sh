#!/usr/bin/env bash
# launch/tpu_vm.sh: train bcos_jax on a Cloud TPU VM slice, one host or many.
#
# Usage:
#   launch/tpu_vm.sh --name=NAME --zone=ZONE --accelerator_type=TYPE \
#       --bucket=BUCKET --config=configs/X.py[:VARIANT] --workdir=PATH_IN_BUCKET \
#       [--data_dir=gs://BUCKET/tfds] [--spot | --preemptible] [--project=PROJECT] \
#       [--runtime_version=VERSION] [--ref=GIT_REF] [--delete] \
#       [--dry_run] [--vm_exists] [-- FLAGS FOR bcos_jax.main ...]
#
# Example (a v4-32 spot slice: 4 hosts, 16 chips):
#   launch/tpu_vm.sh --name=bcos-r50 --zone=us-central2-b --accelerator_type=v4-32 \
#       --spot --bucket=my-bucket --config=configs/imagenet_resnet34.py \
#       --workdir=runs/r34 --data_dir=gs://my-bucket/tfds -- --config.batch_size=1024
#
# Required flags:
#   --name=NAME              TPU VM (slice) name; created if it does not exist.
#   --zone=ZONE              e.g. us-central2-b (v4), us-west4-a (v5e).
#   --accelerator_type=TYPE  e.g. v4-32, v5litepod-16, v5p-16, v6e-16.
#   --bucket=BUCKET          GCS bucket (name or gs://name) for the workdir.
#   --config=FILE[:VARIANT]  a configs/*.py file, relative to the repository root.
#   --workdir=PATH           path inside the bucket (runs/r34, or gs://BUCKET/runs/r34);
#                            the trainer gets /mnt/gcs/BUCKET/PATH on every worker.
# Optional flags:
#   --data_dir=DIR           tfds data dir, passed as --config.data_dir (tfds reads
#                            gs:// paths directly); prepare it first with
#                            launch/prepare_data.py --dataset=NAME --data_dir=DIR.
#   --spot                   a spot slice (cheap, preemptible at any time).
#   --preemptible            a preemptible slice (cheap, at most 24 h).
#   --project=PROJECT        GCP project (default: gcloud's configured project).
#   --runtime_version=V      TPU software version; default from the accelerator:
#                            v2/v3/v4 tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite,
#                            v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e.
#   --ref=GIT_REF            the commit shipped to the workers (default HEAD).
#   --delete                 delete the slice when training returns, whatever its
#                            status (the checkpoints are in the bucket).
#   --dry_run                print every command (`+ ...`, shell-quoted), run none;
#                            DRY_RUN=1 in the environment does the same.
#   --vm_exists              dry run only: assume `describe` finds the slice READY
#                            (without it a dry run assumes it does not exist and
#                            prints the create command). A dry run still checks,
#                            read-only, that --ref and --config exist in git.
#   -- ...                   everything after `--` goes to bcos_jax.main unchanged.
# Flags may be written --flag=value or --flag value, with _ or - in names.
#
# Steps (each gcloud/git command is printed as `+ ...` before it runs):
#   1. describe: reuse a READY slice; re-create a preempted one (spot and
#      preemptible slices cannot restart); start a STOPPED one; else create it.
#   2. ship: `git archive REF` to a tarball, scp'd to every worker (--worker=all).
#      Archiving a commit ships the repository's files only (no .venv, no data,
#      no outputs) and makes the run reproducible: commit before launching.
#   3. install on every worker: unpack to ~/bcos_jax; a Python 3.11 venv in
#      ~/bcos_jax_venv made with uv (TPU VM images ship Python 3.10, bcos_jax
#      needs 3.11+); `pip install -e ~/bcos_jax 'jax[tpu]'` (uv's pip).
#   4. mount the bucket with gcsfuse on every worker at /mnt/gcs/BUCKET, with
#      --implicit-dirs and a --rename-dir-limit (orbax finalizes a checkpoint by
#      renaming its directory, which gcsfuse refuses by default).
#   5. train: the same `python -m bcos_jax.main --config=... --workdir=...
#      --config.distributed=True ...` on every worker (ssh --worker=all);
#      jax.distributed.initialize() finds the other hosts from TPU metadata.
#   6. with --delete: delete the slice.
# The ssh session runs the training: start this script in tmux/screen (or on
# a machine that stays up), since a dropped connection stops the run.
#
# Exit status: that of the training (gcloud returns the first worker's non-zero
# status); 75 = stopped early with a checkpoint saved (rerun the same command to
# resume), 255 = ssh or a worker lost (e.g. a preempted spot slice: rerun the
# same command; it re-creates the slice and resumes from the newest
# checkpoint). Usage errors exit 2.

set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_DIR
readonly MOUNT_ROOT=/mnt/gcs
readonly REMOTE_TARBALL=bcos_jax.tar.gz  # in the worker's home directory
readonly PYTHON_VERSION=3.11             # bcos_jax's python_requires
# gcsfuse renames a directory only if it holds fewer objects than this; an
# orbax checkpoint of a large model holds thousands.
readonly RENAME_DIR_LIMIT=1000000
readonly EX_TEMPFAIL=75

NAME="" ZONE="" ACCELERATOR_TYPE="" BUCKET="" CONFIG="" WORKDIR="" DATA_DIR=""
PROJECT="" RUNTIME_VERSION="" REF=HEAD
SPOT=0 PREEMPTIBLE=0 DELETE=0 VM_EXISTS=0
case ${DRY_RUN:-0} in
  "" | 0 | false) DRY_RUN=0 ;;
  *) DRY_RUN=1 ;;
esac
EXTRA_FLAGS=()

usage() {
  # The header comment above, from its second line to the first blank line.
  sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

log() { echo "tpu_vm.sh: $*" >&2; }

usage_error() {
  log "error: $*"
  echo >&2
  usage >&2
  exit 2
}

die() {
  log "error: $*"
  exit 1
}

# One line that a POSIX shell splits back into the same words: safe words as
# they are, the others in single quotes (so the dry run can be pasted).
quote() {
  local word sq="'" escaped_sq="'\\''" out=()
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./=:,@%+-]+$ ]]; then
      out+=("$word")
    else
      out+=("'${word//$sq/$escaped_sq}'")
    fi
  done
  printf '%s\n' "${out[*]}"
}

print_command() { printf '+ %s\n' "$(quote "$@")"; }

run() {
  print_command "$@"
  ((DRY_RUN)) || "$@"
}

# gcloud compute tpus tpu-vm ARGS..., in this zone and project.
tpu_vm() {
  run gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}
}

# Runs a shell command line on every worker of the slice.
on_all_workers() { tpu_vm ssh "$NAME" --worker=all --command="$1"; }

parse_args() {
  local arg key value
  while (($#)); do
    arg=$1
    shift
    if [[ $arg == -- ]]; then
      EXTRA_FLAGS=("$@")
      return
    fi
    [[ $arg == -h || $arg == --help ]] && { usage; exit 0; }
    [[ $arg == --* ]] || usage_error "unexpected argument '$arg' (flags start with --; flags for bcos_jax.main go after --)"
    key=${arg%%=*}
    key=${key//-/_}
    case $key in
      __spot | __preemptible | __delete | __dry_run | __vm_exists)
        [[ $arg == *=* ]] && usage_error "$arg: ${key//_/-} takes no value"
        case $key in
          __spot) SPOT=1 ;;
          __preemptible) PREEMPTIBLE=1 ;;
          __delete) DELETE=1 ;;
          __dry_run) DRY_RUN=1 ;;
          __vm_exists) VM_EXISTS=1 ;;
        esac
        continue
        ;;
    esac
    if [[ $arg == *=* ]]; then
      value=${arg#*=}
    elif (($#)); then
      value=$1
      shift
    else
      usage_error "--${key#__} needs a value"
    fi
    case $key in
      __name) NAME=$value ;;
      __zone) ZONE=$value ;;
      __accelerator_type) ACCELERATOR_TYPE=$value ;;
      __bucket) BUCKET=${value#gs://} && BUCKET=${BUCKET%/} ;;
      __config) CONFIG=$value ;;
      __workdir) WORKDIR=$value ;;
      __data_dir) DATA_DIR=$value ;;
      __project) PROJECT=$value ;;
      __runtime_version) RUNTIME_VERSION=$value ;;
      __ref) REF=$value ;;
      *) usage_error "unknown flag ${arg%%=*} (flags for bcos_jax.main go after --)" ;;
    esac
  done
}

# The TPU software version Google recommends for JAX on this accelerator.
default_runtime_version() {
  case $1 in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) return 1 ;;
  esac
}

# The workdir as a path inside the bucket: runs/x and gs://BUCKET/runs/x both
# give runs/x.
workdir_in_bucket() {
  local path=$1
  if [[ $path == gs://* ]]; then
    [[ $path == "gs://$BUCKET/"* ]] ||
      usage_error "--workdir=$path is not in --bucket=$BUCKET; give a path inside the bucket"
    path=${path#"gs://$BUCKET/"}
  fi
  [[ $path == /* ]] &&
    usage_error "--workdir=$path: give a path inside the bucket (e.g. runs/r34); it is mounted at $MOUNT_ROOT/$BUCKET on the workers"
  path=${path%/}
  [[ -n $path && $path != . ]] || usage_error "--workdir: give a directory inside the bucket, e.g. runs/r34"
  echo "$path"
}

check_args() {
  local missing=()
  [[ -n $NAME ]] || missing+=(--name)
  [[ -n $ZONE ]] || missing+=(--zone)
  [[ -n $ACCELERATOR_TYPE ]] || missing+=(--accelerator_type)
  [[ -n $BUCKET ]] || missing+=(--bucket)
  [[ -n $CONFIG ]] || missing+=(--config)
  [[ -n $WORKDIR ]] || missing+=(--workdir)
  ((${#missing[@]} == 0)) || usage_error "missing required flag(s): ${missing[*]}"
  ((SPOT && PREEMPTIBLE)) && usage_error "--spot and --preemptible exclude each other; give one"
  ((VM_EXISTS && !DRY_RUN)) && usage_error "--vm_exists only applies to --dry_run (a real run asks gcloud)"
  if [[ -z $RUNTIME_VERSION ]]; then
    RUNTIME_VERSION=$(default_runtime_version "$ACCELERATOR_TYPE") ||
      usage_error "no default TPU software version for --accelerator_type=$ACCELERATOR_TYPE; give --runtime_version (see gcloud compute tpus tpu-vm versions list --zone=$ZONE)"
  fi
  WORKDIR=$(workdir_in_bucket "$WORKDIR")
}

# The workers get the committed files of REF only, so the config must be one.
check_repository() {
  git -C "$REPO_DIR" rev-parse --verify --quiet "$REF^{commit}" >/dev/null ||
    die "--ref=$REF is not a commit in $REPO_DIR (the workers get \`git archive $REF\`)"
  git -C "$REPO_DIR" cat-file -e "$REF:${CONFIG%%:*}" 2>/dev/null ||
    die "--config=$CONFIG: ${CONFIG%%:*} is not a file committed at $REF; give a path relative to the repository root and commit it (the workers get the committed files only)"
  if [[ $REF == HEAD ]] && ! git -C "$REPO_DIR" diff-index --quiet HEAD --; then
    log "note: uncommitted changes in $REPO_DIR are not shipped; the workers run HEAD ($(git -C "$REPO_DIR" rev-parse --short HEAD))"
  fi
}

create_vm() {
  local provisioning=()
  ((SPOT)) && provisioning=(--spot)
  ((PREEMPTIBLE)) && provisioning=(--preemptible)
  tpu_vm create "$NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" \
    ${provisioning[@]+"${provisioning[@]}"}
}

delete_vm() { tpu_vm delete "$NAME" --quiet; }

# Creates the slice, or reuses it after checking it is the accelerator asked for.
ensure_vm() {
  local describe=(gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE"
    ${PROJECT:+--project="$PROJECT"} --format='value(state,acceleratorType)')
  local found="" state type
  print_command "${describe[@]}"
  if ((DRY_RUN)); then
    ((VM_EXISTS)) && found="READY $ACCELERATOR_TYPE"
  else
    # A failure means no such slice (or no access; create then says which).
    found=$("${describe[@]}" 2>/dev/null) || found=""
  fi
  if [[ -z $found ]]; then
    log "no TPU VM $NAME in $ZONE: creating it"
    create_vm
    return
  fi
  read -r state type <<<"$found"
  [[ -z $type || $type == "$ACCELERATOR_TYPE" ]] ||
    die "TPU VM $NAME exists with accelerator type $type, not $ACCELERATOR_TYPE: delete it (gcloud compute tpus tpu-vm delete $NAME --zone=$ZONE) or choose another --name"
  case $state in
    READY) log "reusing TPU VM $NAME ($type, READY)" ;;
    PREEMPTED | TERMINATED)
      log "TPU VM $NAME is $state and cannot restart: deleting and re-creating it"
      delete_vm
      create_vm
      ;;
    STOPPED) tpu_vm start "$NAME" ;;
    *) die "TPU VM $NAME is $state; wait until it is READY (gcloud compute tpus tpu-vm describe $NAME --zone=$ZONE) and rerun" ;;
  esac
}

ship_code() {
  local tarball="${TMPDIR:-/tmp}/bcos_jax-$NAME.tar.gz"
  run git -C "$REPO_DIR" archive --format=tar.gz --output="$tarball" "$REF"
  tpu_vm scp "$tarball" "$NAME:$REMOTE_TARBALL" --worker=all
}

# A fresh copy of the code (so deleted files do not linger) and the venv. The
# fixed parts are written for the remote shell (~ expands there).
install_on_workers() {
  on_all_workers "set -e; rm -rf ~/bcos_jax; mkdir -p ~/bcos_jax; \
tar -xzf ~/$REMOTE_TARBALL -C ~/bcos_jax; \
[ -x ~/.local/bin/uv ] || curl -LsSf https://astral.sh/uv/install.sh | env UV_NO_MODIFY_PATH=1 sh; \
~/.local/bin/uv venv --allow-existing --python $PYTHON_VERSION ~/bcos_jax_venv; \
~/.local/bin/uv pip install --python ~/bcos_jax_venv/bin/python -e ~/bcos_jax 'jax[tpu]'"
}

# gcsfuse from Google's apt repository (not on the TPU images); the mount is
# skipped when it is already there, so a rerun is cheap.
mount_bucket_on_workers() {
  local mount_point bucket
  mount_point=$(quote "$MOUNT_ROOT/$BUCKET")
  bucket=$(quote "$BUCKET")
  # shellcheck disable=SC2016  # $(lsb_release) and $USER expand on the worker
  local install_gcsfuse='echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -cs) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null; curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null; sudo apt-get -o DPkg::Lock::Timeout=600 update -q; sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q gcsfuse'
  # shellcheck disable=SC2016
  on_all_workers "set -e; if ! mountpoint -q $mount_point; then \
command -v gcsfuse >/dev/null || { $install_gcsfuse; }; \
sudo mkdir -p $mount_point; sudo chown \"\$USER\" $mount_point; \
gcsfuse --implicit-dirs --rename-dir-limit=$RENAME_DIR_LIMIT $bucket $mount_point; fi"
}

# The same command on every worker; each process reads its own rows of every
# global batch. Returns the training's exit status.
train_on_workers() {
  local flags=(--config="$CONFIG" --workdir="$MOUNT_ROOT/$BUCKET/$WORKDIR" --config.distributed=True)
  [[ -n $DATA_DIR ]] && flags+=(--config.data_dir="$DATA_DIR")
  flags+=(${EXTRA_FLAGS[@]+"${EXTRA_FLAGS[@]}"})
  local status=0
  on_all_workers "cd ~/bcos_jax && exec ~/bcos_jax_venv/bin/python -m bcos_jax.main $(quote "${flags[@]}")" ||
    status=$?
  return "$status"
}

report() {
  local status=$1 where="gs://$BUCKET/$WORKDIR"
  ((DRY_RUN)) && { log "dry run: nothing was run"; return; }
  case $status in
    0) log "training finished; results in $where" ;;
    "$EX_TEMPFAIL") log "training stopped early with a checkpoint in $where: run the same command again to resume" ;;
    255) log "ssh or a worker was lost (a spot/preemptible slice may have been preempted): run the same command again; it re-creates a preempted slice and resumes from the newest checkpoint in $where" ;;
    *) log "training failed with status $status (the workers' output is above)" ;;
  esac
}

main() {
  parse_args "$@"
  check_args
  ((DRY_RUN)) && log "dry run: printing the commands, running none"
  check_repository
  ensure_vm
  ship_code
  install_on_workers
  mount_bucket_on_workers
  local status=0
  train_on_workers || status=$?
  if ((DELETE)) && ! delete_vm; then
    log "could not delete $NAME: delete it yourself (gcloud compute tpus tpu-vm delete $NAME --zone=$ZONE), it costs money while it exists"
  fi
  report "$status"
  exit "$status"
}

main "$@"
