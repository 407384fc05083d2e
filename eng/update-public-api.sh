#!/usr/bin/env bash
# Regenerates src/<Lib>/PublicAPI.Unshipped.txt for the four libraries from the current code, after a
# deliberate public API change (the build fails with RS0016 "not part of the declared public API" or
# RS0017 "part of the declared API, but cannot be found" until the lists match).
#
# Unshipped = the current public surface minus what PublicAPI.Shipped.txt already lists. It is
# rebuilt from scratch (so renamed or removed members drop out, nullable annotations included) by the
# PublicApiAnalyzers code fix for RS0016, run through `dotnet format analyzers`, then sorted for
# stable diffs. Removing a member that is in PublicAPI.Shipped.txt stays a build error on purpose:
# mark it `*REMOVED*<line>` in Unshipped by hand.
#
# Usage: eng/update-public-api.sh [Lib ...]   (default: Iommu.Core Iommu.VtD Vfio.Mdev Vfio.Type1)
# Then review `git diff -- 'src/*/PublicAPI.*.txt'` and commit it with the change.
set -euo pipefail
cd "$(dirname "$0")/.."

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
libs=("$@")
[ ${#libs[@]} -gt 0 ] || libs=(Iommu.Core Iommu.VtD Vfio.Mdev Vfio.Type1 Uacce)

for lib in "${libs[@]}"; do
  dir="src/$lib"
  proj="$dir/$lib.csproj"
  [ -f "$proj" ] || { echo "no such library: $proj" >&2; exit 2; }
  [ -f "$dir/PublicAPI.Shipped.txt" ] || printf '#nullable enable\n' > "$dir/PublicAPI.Shipped.txt"
  unshipped="$dir/PublicAPI.Unshipped.txt"
  # Keep hand-written *REMOVED* lines (removals of shipped API); everything else is regenerated.
  removed=$(grep -E '^\*REMOVED\*' "$unshipped" 2>/dev/null || true)
  printf '#nullable enable\n' > "$unshipped"
  echo "== $lib"
  # The code fix only edits the PublicAPI files (RS0016 is the only diagnostic it is asked to fix).
  dotnet format analyzers "$proj" --diagnostics RS0016 --severity warn --verbosity quiet
  {
    printf '#nullable enable\n'
    { grep -vE '^#nullable enable$|^$' "$unshipped" || true; [ -z "$removed" ] || printf '%s\n' "$removed"; } | LC_ALL=C sort -u
  } > "$unshipped.tmp"
  mv "$unshipped.tmp" "$unshipped"
  echo "   $(($(wc -l < "$unshipped") - 1)) unshipped entries"
done
echo "Check: dotnet build src/Vfio.Type1/Vfio.Type1.csproj && dotnet build src/Iommu.VtD/Iommu.VtD.csproj"
