#!/usr/bin/env sh
# Install the browser's vendor assets from npm (exact versions from package-lock.json) and
# copy them into static/vendor/, where the page loads them: it works with no internet.
set -eu
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund --loglevel=error
mkdir -p static/vendor
cp node_modules/socket.io-client/dist/socket.io.min.js static/vendor/socket.io.min.js
cp node_modules/plotly.js-dist-min/plotly.min.js static/vendor/plotly.min.js
echo "vendor assets in static/vendor/: $(ls static/vendor | tr '\n' ' ')"
