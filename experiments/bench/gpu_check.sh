#!/usr/bin/env bash
# One-shot GPU check (< 5 minutes on one H100): figure 1 of run_bench.py on CUDA, plus one
# training epoch of KEMM on a synthetic cohort of 10k-patch bags read from disk.
#
#   bash experiments/bench/gpu_check.sh            # from the repo root, with .venv
#   KEMM_GPU_CHECK_TINY=1 bash experiments/bench/gpu_check.sh   # tiny sizes; runs on CPU too (dry run)
#
# Writes experiments/bench/gpu_results.json (or $OUT/gpu_results.json when $OUT is set) and
# prints a table. Peak memory = torch.cuda.max_memory_allocated per configuration (the bag,
# model, activations and optimizer state on the device).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
OUT_JSON="${OUT:-experiments/bench}/gpu_results.json"
exec timeout 290 "$PY" - "$OUT_JSON" <<'EOF'
import json, os, sys, time
from pathlib import Path

sys.path.insert(0, "experiments/bench")
sys.path.insert(0, ".")
import torch
import run_bench as rb

out_json = Path(sys.argv[1])
tiny = os.environ.get("KEMM_GPU_CHECK_TINY") == "1"
if not torch.cuda.is_available() and not tiny:
    sys.exit("gpu_check: CUDA is not available (set KEMM_GPU_CHECK_TINY=1 for a CPU dry run)")
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
t_start = time.perf_counter()
res = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu (dry run)", "torch": torch.__version__,
       "loadavg_start": rb.loadavg(), "figure_model": {}, "epoch": {}}
sizes = [256, 1024] if tiny else rb.MODEL_SIZES
wsi_dim = 64 if tiny else rb.WSI_DIM


def to_dev(batch):
    return {k: ([t.to(dev, non_blocking=True) for t in v] if isinstance(v, list) and v and torch.is_tensor(v[0])
                else v.to(dev, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


for n in sizes:
    cpu_batch = rb.make_model_batch(n, wsi_dim)
    batch = to_dev(cpu_batch)
    for v in rb.MODEL_VARIANTS:
        if time.perf_counter() - t_start > 200:
            res["figure_model"].setdefault(v, {})[n] = {"skipped": "time budget of the check"}
            continue
        torch.manual_seed(0)
        try:
            model = rb.build_variant(v, wsi_dim).to(dev)
            step = rb.train_step_fn(model, batch)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()

            def timed():
                loss = step()  # float() syncs
                sync()
                return loss

            r = rb.time_steps(timed, 3, slow_s=10.0)
            if dev.type == "cuda":
                r["peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        except torch.OutOfMemoryError:
            r = {"skipped": "CUDA out of memory"}
        except RuntimeError as e:  # e.g. a kernel without support for this size
            r = {"error": str(e).splitlines()[0][:200]}
        finally:
            model = step = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        res["figure_model"].setdefault(v, {})[n] = r
        print(f"{v:15s} N={n:>7,d} {r.get('time_s', r.get('skipped', r.get('error')))} s/step  peak {r.get('peak_mb')} MB",
              flush=True)
    del batch, cpu_batch
for v, rows in res["figure_model"].items():
    for n, r in rows.items():
        a = res["figure_model"]["abmil"].get(n, {})
        if "time_s" in r and "time_s" in a:
            r["time_vs_abmil"] = round(r["time_s"] / a["time_s"], 3)

# One epoch of KEMM on a synthetic cohort read from disk (h5, float16), DataLoader with 2 workers.
work = Path("/tmp/kemm_bench/gpu")
n_pat, patches = (4, 500) if tiny else (16, 10_000)
t0 = time.perf_counter()
coh = rb._synthetic_features(work, n_pat, patches, wsi_dim, print)
from kemm.model.data.bags import convert_features_dir
fdir = coh.root / "features_h5-float16"
convert_features_dir(coh.features_dir, fdir, ".h5", "float16")
res["epoch"]["prepare_s"] = round(time.perf_counter() - t0, 1)
data = rb._survival_data(coh, fdir, rb.TEXT_DIM)
from torch.utils.data import DataLoader
from kemm.model.nn.losses import nll_surv_loss
from kemm.model.nn.registry import ModelSpec, build_model
ids = data.cohort.case_ids
fd = data.fold(ids, ids[:2], n_bins=2)
loader = DataLoader(fd.train, batch_size=1, shuffle=True, collate_fn=data.collate(), num_workers=2, pin_memory=dev.type == "cuda")
torch.manual_seed(0)
model = build_model("kemm", ModelSpec(wsi_dim=data.wsi_dim, omic_dims=data.omic_dims, text_dim=data.text_dim)).to(dev).train()
opt = torch.optim.Adam(model.parameters(), lr=2e-4)
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
n = 0
for batch in loader:
    batch = to_dev(batch)
    opt.zero_grad(set_to_none=True)
    o = model(batch)
    (nll_surv_loss(o["logits"], batch["label"], batch["censorship"]) + o["aux_loss"]).backward()
    opt.step()
    n += len(batch["case_id"])
sync()
dt = time.perf_counter() - t0
res["epoch"].update(patients=n, seconds=round(dt, 3), patients_per_s=round(n / dt, 2), patches_per_bag=patches,
                    storage="h5-float16", workers=2,
                    peak_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1) if dev.type == "cuda" else None)
print("epoch", res["epoch"], flush=True)
res["loadavg_end"] = rb.loadavg()
res["wall_s"] = round(time.perf_counter() - t_start, 1)
out_json.parent.mkdir(parents=True, exist_ok=True)
out_json.write_text(json.dumps(res, indent=2, default=str) + "\n")
print(f"wrote {out_json} in {res['wall_s']} s")
EOF
