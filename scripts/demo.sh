#!/usr/bin/env bash
# The main job: installs what is missing (scripts/install.sh), then serves the demo configuration.
# Extra arguments go to `streamsrv serve`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/install.sh

echo "==> [demo] streamsrv serve --config examples/demo.yaml $*"
exec "$STREAMSRV_VENV_DIR/bin/streamsrv" serve --config examples/demo.yaml "$@"
