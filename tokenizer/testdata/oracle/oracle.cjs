// Runs the reference Rust tokenizers library (through its Node binding, the
// npm package "tokenizers") on a batch: node oracle.cjs batch.json > out.json
//
// batch.json: [{"file": "tokenizer.json", "texts": [...], "ids": [[...], ...]}, ...]
// out.json: for each entry, "cases" (encode with add_special_tokens=true,
// then decode with skip_special_tokens false and true) and "decodes"
// (decode of the given id lists, both ways).
const { Tokenizer } = require('tokenizers');
const fs = require('fs');

(async () => {
  const batch = JSON.parse(fs.readFileSync(process.argv[2]));
  const out = [];
  for (const entry of batch) {
    const tk = Tokenizer.fromFile(entry.file);
    const cases = [];
    for (const text of entry.texts) {
      const enc = await tk.encode(text, null, { addSpecialTokens: true });
      const ids = enc.getIds();
      cases.push({
        text,
        ids,
        decoded: await tk.decode(ids, false),
        decoded_skip: await tk.decode(ids, true),
      });
    }
    const decodes = [];
    for (const ids of entry.ids || []) {
      decodes.push({
        ids,
        decoded: await tk.decode(ids, false),
        decoded_skip: await tk.decode(ids, true),
      });
    }
    out.push({ cases, decodes });
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
