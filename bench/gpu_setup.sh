#!/usr/bin/env bash
# Carry onnxruntime-gpu (CUDA 13, ~255 MB) to the device machine in parts under its 64 MiB limit.
#
#   bench/gpu_setup.sh fetch [PYVER]     here: download the wheel for Python PYVER (default: the
#                                        device's 3.12), split it into .gpu-wheel/part.NN (< 60 MiB
#                                        each) with SHA256SUMS, and print the device commands
#   bench/gpu_setup.sh split FILE DIR    split any FILE into DIR/part.NN + SHA256SUMS
#   bench/gpu_setup.sh join DIR OUT      join DIR/part.NN into OUT/<name>, checking every sha256
#   bench/gpu_setup.sh install DIR       on the device: join DIR's parts, swap the CPU onnxruntime
#                                        for the GPU wheel, and check CUDA starts (preload_dlls)
#
# .gpu-wheel/ is git-ignored: the device tool carries ignored paths named in `carry`, and files
# outside the working tree (~/ort-parts) survive between calls while the machine stays warm.
# bench/README.md has the whole sequence.
set -euo pipefail

PART_BYTES="${GPU_SETUP_PART_BYTES:-62914560}"  # 60 MiB; the tests use a smaller value
ORT_SPEC="${GPU_SETUP_ORT_SPEC:-onnxruntime-gpu==1.31.*}"
OUT="${GPU_SETUP_DIR:-.gpu-wheel}"

split_file() {
  local file="$1" dir="$2"
  mkdir -p "$dir"
  rm -f "$dir"/part.* "$dir"/SHA256SUMS
  split --bytes="$PART_BYTES" --numeric-suffixes=0 --suffix-length=2 "$file" "$dir/part."
  (cd "$dir" && sha256sum part.* > SHA256SUMS)
  # The whole file's sum and name last: `join` checks the parts, then the result.
  echo "$(sha256sum "$file" | cut -d' ' -f1)  $(basename "$file")" >> "$dir/SHA256SUMS"
}

join_parts() {
  local dir="$1" out="$2" name sums
  sums="$(cd "$dir" && pwd)/SHA256SUMS"
  name="$(tail -n 1 "$sums" | awk '{print $2}')"
  (cd "$dir" && head -n -1 "$sums" | sha256sum --check --quiet)
  mkdir -p "$out"
  cat "$dir"/part.* > "$out/$name"
  (cd "$out" && tail -n 1 "$sums" | sha256sum --check --quiet)
  echo "$out/$name"
}

case "${1:-}" in
  fetch)
    pyver="${2:-3.12}"
    tmp="$(mktemp -d)"
    python3 -m pip download --no-deps --only-binary=:all: --python-version "$pyver" \
      --platform manylinux_2_28_x86_64 -d "$tmp" "$ORT_SPEC"
    wheel="$(ls "$tmp"/*.whl)"
    split_file "$wheel" "$OUT"
    rm -rf "$tmp"
    parts=("$OUT"/part.*)
    echo "split $(basename "$wheel") into ${#parts[@]} parts in $OUT/"
    echo "device calls, one warm lease (run tool, carry = the part, or SHA256SUMS with the last):"
    for part in "${parts[@]}"; do
      echo "  carry [\"$part\"]:  mkdir -p ~/ort-parts && cp $part ~/ort-parts/"
    done
    echo "  carry [\"$OUT/SHA256SUMS\"]:  cp $OUT/SHA256SUMS ~/ort-parts/ && bash bench/gpu_setup.sh install ~/ort-parts"
    ;;
  split)
    split_file "$2" "$3"
    ;;
  join)
    join_parts "$2" "$3"
    ;;
  install)
    dir="$2"
    wheel="$(join_parts "$dir" "$dir/wheel")"
    # Both distributions own the `onnxruntime` package: the CPU one must go first.
    python3 -m pip uninstall -y onnxruntime >/dev/null 2>&1 || true
    python3 -m pip install --no-deps --no-index "$wheel"
    python3 - <<'EOF'
import onnxruntime as ort
ort.preload_dlls()  # CUDA 13 and cuDNN from the nvidia-* pip packages
print(ort.__version__, ort.get_available_providers())
import numpy as np
from onnx import TensorProto, helper
g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 8
s = ort.InferenceSession(m.SerializeToString(), providers=["CUDAExecutionProvider"])
print("session providers:", s.get_providers(), s.run(None, {"x": np.ones(2, np.float32)})[0])
EOF
    ;;
  *)
    sed -n '2,14p' "$0"
    exit 2
    ;;
esac
