"""The speed anchor: mamba_ssm (state-spaces/mamba, Triton kernels, CUDA graphs) on
random-weight Mamba-2 LMs of released shapes, decode and prefill tokens/s on CUDA.

Run on a CUDA machine with torch and triton, with the mamba_ssm package of
github.com/state-spaces/mamba on PYTHONPATH (its Triton path needs nothing compiled):
    PYTHONPATH=path/to/mamba python3 scripts/bench/mamba_ssm.py 130m:f32:1 130m:bf16:8 2.7b:bf16:1 codestral:bf16:1
Compare with `mamba2 bench --backend webgpu --shape S` in the same call.
"""
import sys, types, time, json, torch
sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
from mamba_ssm.models.config_mamba import MambaConfig
from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

SHAPES = {
    "130m": dict(d_model=768, n_layer=24, vocab_size=50280, ssm_cfg=dict(layer="Mamba2", use_mem_eff_path=False)),
    "2.7b": dict(d_model=2560, n_layer=64, vocab_size=50280, ssm_cfg=dict(layer="Mamba2", use_mem_eff_path=False)),
    "codestral": dict(d_model=4096, n_layer=64, vocab_size=32768, ssm_cfg=dict(layer="Mamba2", ngroups=8, use_mem_eff_path=False)),
}
def run(shape, dtype, batch):
    cfg = MambaConfig(**SHAPES[shape], rms_norm=True, residual_in_fp32=True, fused_add_norm=False, pad_vocab_size_multiple=16)
    m = MambaLMHeadModel(cfg, device="cuda", dtype=dtype).eval()
    ids = torch.randint(0, 1000, (batch, 16), device="cuda")
    def gen(n):
        torch.cuda.synchronize(); t = time.perf_counter()
        m.generate(ids, max_length=16 + n, cg=True, top_k=1)  # greedy
        torch.cuda.synchronize(); return time.perf_counter() - t
    gen(2); gen(66)
    ts = sorted(gen(66) - gen(2) for _ in range(3))
    dec = batch * 64 / ts[1]
    out = dict(shape=shape, dtype=str(dtype), batch=batch, decode_tok_s=round(dec, 1))
    if batch == 1:
        x = torch.randint(0, 1000, (1, 2048), device="cuda")
        with torch.no_grad():
            m(x); torch.cuda.synchronize()
            tt = []
            for _ in range(3):
                t = time.perf_counter(); m(x); torch.cuda.synchronize(); tt.append(time.perf_counter() - t)
        out["prefill2048_tok_s"] = round(2048 / sorted(tt)[1])
    print(json.dumps(out), flush=True)
    del m; torch.cuda.empty_cache()

for a in sys.argv[1:]:
    shape, dt, b = a.split(":")
    try:
        run(shape, dict(f32=torch.float32, bf16=torch.bfloat16)[dt], int(b))
    except Exception as e:
        print("ssm", a, "failed:", repr(e)[:400], flush=True)
