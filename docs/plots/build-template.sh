#!/usr/bin/env bash
# Builds .dvc/plots-offline.html: DVC's plot page with vega, vega-lite and vega-embed inlined
# (each BSD-3-Clause, their licence headers kept), so `dvc plots show` renders its curves
# without a network (DVC's own page loads them from a CDN). Needs npm and the npm registry;
# the built page is committed, so users need neither.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0 >/dev/null &&
 for f in *.tgz; do mkdir "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done)
{
  printf '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n{refresh_tag}\n<title>simrefinery: DVC plots</title>\n'
  printf '<!-- vega 5.33.1, vega-lite 5.23.0, vega-embed 6.29.0 from npm, inlined by docs/plots/build-template.sh.\n'
  printf '     Copyright (c) the University of Washington Interactive Data Lab; BSD-3-Clause\n'
  printf '     (https://github.com/vega/vega/blob/main/LICENSE and the same in vega-lite and vega-embed). -->\n'
  for js in vega-5.33.1/package/build/vega.min.js vega-lite-5.23.0/package/build/vega-lite.min.js \
            vega-embed-6.29.0/package/build/vega-embed.min.js; do
    printf '<script type="text/javascript">\n'; cat "$work/$js"; printf '\n</script>\n'
  done
  printf '<style>table { border-spacing: 15px; } body { font-family: sans-serif; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n'
} > .dvc/plots-offline.html
echo "wrote .dvc/plots-offline.html ($(wc -c < .dvc/plots-offline.html) bytes)"
