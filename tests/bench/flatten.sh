#!/usr/bin/env bash
# The image-flattening section of tests/bench.sh, which runs alone too:
#
#   ours    the image store's cold RootFS of a docker-archive of about
#           BENCH_FLATTEN_MB (200) MB of random files in BENCH_FLATTEN_LAYERS
#           (4) layers (tests/bench/flatten: a fresh store, Load not timed,
#           RootFS timed, syncfs included)
#   theirs  skopeo copy docker-archive:FILE oci:DIR:tag, then umoci unpack
#           --rootless --image DIR:tag BUNDLE of the same archive, the two
#           timed together
#
# Each BENCH_FLATTEN_RUNS (3) times, everything on disk under /var/tmp and
# the page cache written back before each timed part; prints the medians and
# ours/theirs (target <= 1.0) as lines of bench.sh's table. Needs skopeo,
# umoci and Go (GO, default go).
set -euo pipefail

cd "$(dirname "$0")/../.."
GO=${GO:-go}
runs=${BENCH_FLATTEN_RUNS:-3}
mb=${BENCH_FLATTEN_MB:-200}
layers=${BENCH_FLATTEN_LAYERS:-4}

for c in skopeo umoci "$GO"; do
	command -v "$c" >/dev/null || { echo "bench: $c not found" >&2; exit 1; }
done

# On disk, not a tmpfs: both write a tree of $mb MB.
work=$(mktemp -d /var/tmp/virt-sandbox-bench-flatten.XXXXXX)
trap 'rm -rf "$work"' EXIT
log() { printf 'bench: %s\n' "$*" >&2; }

"$GO" build -o "$work/flatten" ./tests/bench/flatten
log "flatten: making a docker-archive of $mb MB of random files in $layers layers"
"$work/flatten" -make "$work/image.tar" -mb "$mb" -layers "$layers"
archive_mb=$(du -m "$work/image.tar" | cut -f1)

ours=() theirs=() files=
for i in $(seq "$runs"); do
	log "flatten: run $i of $runs: image store RootFS"
	rm -rf "$work/store"
	sync
	ours+=("$("$work/flatten" -archive "$work/image.tar" -store "$work/store")")
	[ -n "$files" ] || files=$(find "$work"/store/rootfs/*/ -mindepth 1 | wc -l)
	rm -rf "$work/store"

	log "flatten: run $i of $runs: skopeo copy + umoci unpack"
	rm -rf "$work/oci" "$work/bundle"
	sync
	start=$EPOCHREALTIME
	skopeo copy -q "docker-archive:$work/image.tar" "oci:$work/oci:bench" >&2
	umoci unpack --rootless --image "$work/oci:bench" "$work/bundle" >&2
	theirs+=("$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')")
	if [ "$(find "$work/bundle/rootfs" -mindepth 1 | wc -l)" != "$files" ]; then
		log "flatten: umoci's root has $(find "$work/bundle/rootfs" -mindepth 1 | wc -l) entries, ours $files"
		exit 1
	fi
	rm -rf "$work/oci" "$work/bundle"
done
log "flatten: ours ${ours[*]} s, skopeo+umoci ${theirs[*]} s"

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f-%.0f ms", lo * 1000, hi * 1000 }'; }
m_ours=$(median "${ours[@]}")
m_theirs=$(median "${theirs[@]}")
echo "FLATTEN  ${archive_mb} MB docker-archive, $layers layers, $files entries"
printf '%-48s %s\n' \
	"      image store, cold RootFS" "$(awk -v m="$m_ours" 'BEGIN { printf "%9.1f ms", m * 1000 }')  ($(spread "${ours[@]}"), $runs runs)" \
	"      skopeo copy + umoci unpack --rootless" "$(awk -v m="$m_theirs" 'BEGIN { printf "%9.1f ms", m * 1000 }')  ($(spread "${theirs[@]}"), $runs runs)" \
	"      ours / (skopeo + umoci)" "$(awk -v a="$m_ours" -v b="$m_theirs" 'BEGIN { r = a / b; printf "%.2fx   target <= 1.00x: %s", r, (r <= 1.0 ? "ok" : "MISSED") }')"
