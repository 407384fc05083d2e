#!/usr/bin/env bash
# Packs the five libraries and checks the packages as a user would get them: each .nupkg has
# lib/net10.0 (dll + XML docs) and PACKAGE.md, each has its .snupkg (pdb), and a throwaway
# console project outside the repository, referencing the packages from a local folder source,
# builds and runs the README quick start (eng/package-consumer/Program.cs); and a test project built
# from the code blocks of docs/vendor-mdev-driver.md alone runs the guide's driver tests.
#
# Usage: eng/check-packages.sh [--no-build]   (--no-build: pack the Release build already made,
# as .ci/run does right after `dotnet build Iommu.sln -c Release`). PACKAGES_OUT=dir keeps the packages.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

libs=(Iommu.Core Iommu.VtD Vfio.Mdev Vfio.Type1 Uacce)
work=$(mktemp -d /tmp/iommu-pkgcheck.XXXXXX)
trap 'rm -rf "$work"' EXIT
out=${PACKAGES_OUT:-$work/packages}
mkdir -p "$out"

for lib in "${libs[@]}"; do
  dotnet pack "src/$lib/$lib.csproj" -c Release -o "$out" --nologo -v q "$@"
done

list() { if command -v unzip >/dev/null 2>&1; then unzip -Z1 "$1"; else python3 -c 'import sys,zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' "$1"; fi; }
version=
fail=0
for lib in "${libs[@]}"; do
  nupkg=$(ls "$out/$lib".[0-9]*.nupkg 2>/dev/null | head -n 1 || true)
  [ -n "$nupkg" ] || { echo "FAIL no package for $lib in $out"; fail=1; continue; }
  v=$(basename "$nupkg" .nupkg); v=${v#"$lib".}
  version=${version:-$v}
  [ "$v" = "$version" ] || { echo "FAIL $lib is $v, others are $version"; fail=1; }
  snupkg="${nupkg%.nupkg}.snupkg"
  entries=$(list "$nupkg")
  for need in "lib/net10.0/$lib.dll" "lib/net10.0/$lib.xml" "PACKAGE.md" "$lib.nuspec"; do
    grep -qxF "$need" <<<"$entries" || { echo "FAIL $(basename "$nupkg") lacks $need"; fail=1; }
  done
  if [ -f "$snupkg" ]; then
    grep -qxF "lib/net10.0/$lib.pdb" <<<"$(list "$snupkg")" || { echo "FAIL $(basename "$snupkg") lacks lib/net10.0/$lib.pdb"; fail=1; }
  else
    echo "FAIL no symbol package $(basename "$snupkg")"; fail=1
  fi
  echo "package $(basename "$nupkg") ($(wc -c < "$nupkg") bytes) + $(basename "$snupkg") ($(wc -c < "$snupkg" 2>/dev/null || echo 0) bytes)"
done
[ "$fail" = 0 ] || { echo "package check failed"; exit 1; }

# The consumer: outside the repository (no Directory.Build.props / central package management), its
# own NuGet cache (a rebuilt 0.1.0 must not be shadowed by a cached older 0.1.0), the five packages
# from the local folder only (source mapping), everything else from nuget.org as this machine sees it.
app="$work/consumer"
mkdir -p "$app"
cp "$repo/eng/package-consumer/Program.cs" "$app/"
cat > "$app/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <config>
    <add key="globalPackagesFolder" value="$work/nuget-cache" />
  </config>
  <packageSources>
    <clear />
    <add key="local" value="$out" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" protocolVersion="3" />
  </packageSources>
  <packageSourceMapping>
    <packageSource key="local">
$(for lib in "${libs[@]}"; do echo "      <package pattern=\"$lib\" />"; done)
    </packageSource>
    <packageSource key="nuget.org">
      <package pattern="*" />
    </packageSource>
  </packageSourceMapping>
</configuration>
XML
cat > "$app/PackageConsumer.csproj" <<XML
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <ImplicitUsings>enable</ImplicitUsings>
    <Nullable>enable</Nullable>
    <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
  </PropertyGroup>
  <ItemGroup>
$(for lib in "${libs[@]}"; do echo "    <PackageReference Include=\"$lib\" Version=\"[$version]\" />"; done)
  </ItemGroup>
</Project>
XML
echo "consumer: net10.0 console referencing ${libs[*]} $version from $out"
if ! (cd "$app" && NUGET_PACKAGES="$work/nuget-cache" dotnet run -c Release --nologo); then
  echo "package consumer check failed"
  exit 1
fi
# The vendor-driver guide, from its text alone: every code block of docs/vendor-mdev-driver.md becomes the
# file its <!-- snippet: path --> line names (the test project, the driver, its tests), and the project
# builds against the packages and runs its xunit + Moq tests. xunit, Moq and the test SDK restore from
# this machine's NuGet cache, which the repository's test projects filled (same versions, checked by
# DocSnippetTests), so this works offline; nuget.org is asked only when there is no such cache.
guide="$work/vendor-driver"
mkdir -p "$guide"
awk -v dir="$guide" '
  /^<!-- snippet: [^ ]+ -->$/ { name = $3; sub(/.*\//, "", name); next }
  /^```/ { if (out != "") { close(out); out = ""; next } if (name != "") { out = dir "/" name; printf "" > out; name = ""; next } }
  { if (out != "") print > out; name = "" }
' "$repo/docs/vendor-mdev-driver.md"
sed -i -E "s#(Include=\"(Iommu\.Core|Iommu\.VtD|Vfio\.Mdev|Vfio\.Type1)\" Version=)\"[^\"]*\"#\1\"[$version]\"#" "$guide"/*.csproj
machine_cache=$(dotnet nuget locals global-packages --list | sed -E 's/^global-packages: //')
if [ -d "$machine_cache/xunit" ]; then other="$machine_cache"; else other="https://api.nuget.org/v3/index.json"; fi
sed -e "s#<add key=\"nuget.org\" value=\"https://api.nuget.org/v3/index.json\" protocolVersion=\"3\" />#<add key=\"nuget.org\" value=\"$other\" />#" \
  -e "s#$work/nuget-cache#$work/nuget-cache-guide#" "$app/nuget.config" > "$guide/nuget.config"
echo "vendor-driver guide: $(ls "$guide" | tr '\n' ' ')(other packages from $other)"
if ! (cd "$guide" && NUGET_PACKAGES="$work/nuget-cache-guide" dotnet test -c Release --nologo); then
  echo "vendor-driver guide check failed"
  exit 1
fi
echo "packages checked in ${SECONDS}s"
