# Sourced by the image scripts: buildah from Debian (installed when missing), on the vfs storage
# driver (overlay cannot nest inside this machine's own overlay root) under
# ~/.cache/metastore/containers, so image builds need neither a daemon nor privileges beyond root.
# Needs a log function.
if ! command -v buildah >/dev/null 2>&1; then
  log "installing buildah (Debian)"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends buildah >&2
fi
_store="${METASTORE_CACHE:-$HOME/.cache/metastore}/containers"
mkdir -p "$_store/storage" "$_store/run"
export CONTAINERS_STORAGE_CONF="$_store/storage.conf"
cat >"$CONTAINERS_STORAGE_CONF" <<CONF
[storage]
driver = "vfs"
graphroot = "$_store/storage"
runroot = "$_store/run"
CONF
unset _store
