# Makes PyTorch checkpoint fixtures for the restricted unpickler's tests.
import json, os, sys, torch
from safetensors.torch import load_file
out = os.environ["OUT"]
torch.manual_seed(0)
a = torch.randn(2, 3)
base = torch.arange(10, dtype=torch.float32)
d = {
    "a": a,
    "b": torch.tensor([1.5, -2.0, 65504.0, 0.0], dtype=torch.float16),
    "c": torch.randn(3, 2).to(torch.bfloat16),
    "tied1": a,            # the same tensor under two names
    "view": base[3:7],     # contiguous, storage offset 3
    "scalar": torch.tensor(7.25),
    "empty": torch.zeros(0, 4),
    "nested.deep.name": torch.ones(2, 2, 2, dtype=torch.float32),
}
expected = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape), "values": v.float().flatten().tolist()} for k, v in d.items()}
torch.save(d, f"{out}/small_zip.bin")
torch.save(d, f"{out}/small_legacy.bin", _use_new_zipfile_serialization=False)
# A transposed view (not contiguous): the reader must refuse it.
torch.save({"t": a.t()}, f"{out}/noncontig_zip.bin")
json.dump(expected, open(f"{out}/small.json", "w"))
# The tiny-g1 fixture as pytorch_model.bin in both formats and both namings.
sd = load_file("testdata/fixtures/tiny-g1/model.safetensors")
torch.save(sd, f"{out}/tiny_hf_zip.bin")
ss = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in sd.items()}
if "lm_head.weight" not in ss:
    ss["lm_head.weight"] = ss["backbone.embedding.weight"]  # tied, as mamba_ssm saves it
torch.save(ss, f"{out}/tiny_ss_legacy.bin", _use_new_zipfile_serialization=False)
print(sorted(sd.keys())[:5], torch.__version__)
for f in sorted(os.listdir(out)):
    print(f, os.path.getsize(f"{out}/{f}"))
