# Sourced by the curl scripts: argument checks, and one request to the gateway that prints the
# answer as indented JSON (the gateway's ?pretty) and fails on a 4xx/5xx with its error.
# GATEWAY_URL is the gateway (default http://127.0.0.1:8080).
GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}
GATEWAY_URL=${GATEWAY_URL%/}
script=$(basename "$0")

# usage_error MESSAGE: says what is wrong and how to call the script; exits 2.
usage_error() {
  echo "$script: $1" >&2
  echo "usage: $usage" >&2
  exit 2
}

# help_or_count MIN MAX "$@": answers -h/--help, and checks the number of arguments.
help_or_count() {
  local min=$1 max=$2
  shift 2
  if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
    echo "usage: $usage"
    exit 0
  fi
  if [ "$#" -lt "$min" ]; then usage_error "missing arguments"; fi
  if [ "$#" -gt "$max" ]; then usage_error "too many arguments"; fi
}

# need_integer NAME VALUE [MIN MAX]: a non-negative decimal integer (within MIN..MAX if given).
need_integer() {
  local name=$1 value=$2
  if ! [[ $value =~ ^[0-9]+$ ]] || [ "${#value}" -gt 20 ]; then
    usage_error "$name must be a non-negative integer, got \"$value\""
  fi
  if [ -n "${3:-}" ] && { [ "${#value}" -gt 6 ] || [ "$((10#$value))" -lt "$3" ] || [ "$((10#$value))" -gt "$4" ]; }; then
    usage_error "$name must be from $3 to $4, got $value"
  fi
}

# json_string VALUE: VALUE as a JSON string (refuses control characters).
json_string() {
  if [[ $1 =~ [[:cntrl:]] ]]; then usage_error "control characters are not allowed: \"$1\""; fi
  local escaped=${1//\\/\\\\}
  printf '"%s"' "${escaped//\"/\\\"}"
}

# request METHOD PATH [BODY]: prints the answer; on a 4xx/5xx prints the gateway's error on
# stderr and exits 1; exits 1 when the gateway cannot be reached.
request() {
  local method=$1 path=$2 body=${3:-} url answer status
  url="$GATEWAY_URL$path"
  case $path in *\?*) url="$url&pretty" ;; *) url="$url?pretty" ;; esac
  echo "$method $GATEWAY_URL$path${body:+ $body}" >&2
  answer=$(mktemp)
  local args=(--silent --show-error --request "$method" --output "$answer" --write-out '%{http_code}')
  if [ -n "$body" ]; then args+=(--header "Content-Type: application/json" --data "$body"); fi
  if ! status=$(curl "${args[@]}" "$url"); then
    rm -f "$answer"
    echo "$script: cannot reach the gateway at $GATEWAY_URL (set GATEWAY_URL)" >&2
    exit 1
  fi
  if [ "$status" -ge 400 ]; then
    local error
    error=$(sed -n 's/^ *"error": "\(.*\)",\{0,1\}$/\1/p' "$answer" | sed 's/\\"/"/g; s/\\\\/\\/g')
    echo "$script: the gateway answered $status: ${error:-$(cat "$answer")}" >&2
    rm -f "$answer"
    exit 1
  fi
  cat "$answer"
  rm -f "$answer"
}
