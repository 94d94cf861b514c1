// Tensors on the wire, as the Python client sends them (dnnsplit/runtime/wire.py): one safetensors message,
// an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, __metadata__},
// then the raw little-endian bytes of every tensor, back to back.

const DTYPES = {
  float32: ['F32', Float32Array], float64: ['F64', Float64Array], float16: ['F16', Uint16Array],
  int64: ['I64', BigInt64Array], int32: ['I32', Int32Array], int16: ['I16', Int16Array],
  int8: ['I8', Int8Array], uint8: ['U8', Uint8Array], bool: ['BOOL', Uint8Array],
};
const BY_CODE = Object.fromEntries(Object.entries(DTYPES).map(([name, [code, array]]) => [code, [name, array]]));

export const CONTENT_TYPE = 'application/vnd.safetensors';

// tensors: {name: {dtype, shape, data}} with data a typed array; metadata: {string: string}.
export function encode(tensors, metadata = {}) {
  const header = {};
  let offset = 0;
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const t = tensors[name];
    if (!(t.dtype in DTYPES)) throw new Error(`tensor ${name}: dtype ${t.dtype} cannot go on the wire`);
    const size = t.data.byteLength;
    header[name] = { dtype: DTYPES[t.dtype][0], shape: t.shape.map(Number), data_offsets: [offset, offset + size] };
    offset += size;
  }
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let json = new TextEncoder().encode(JSON.stringify(header));
  // Pad the header with spaces to a multiple of 8 bytes, as the safetensors library does (aligned data).
  const padded = Math.ceil(json.length / 8) * 8;
  const body = new Uint8Array(8 + padded + offset);
  new DataView(body.buffer).setBigUint64(0, BigInt(padded), true);
  body.fill(0x20, 8, 8 + padded);
  body.set(json, 8);
  let at = 8 + padded;
  for (const name of names) {
    const data = tensors[name].data;
    body.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    at += data.byteLength;
  }
  return body;
}

// The tensors ({name: {dtype, shape, data}}) and metadata of a safetensors message.
export function decode(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 8) throw new Error(`malformed safetensors payload: ${bytes.length} bytes`);
  const size = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + size)));
  const start = 8 + size;
  const tensors = {};
  for (const [name, spec] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [dtype, Array_] = BY_CODE[spec.dtype] || [];
    if (!dtype) throw new Error(`tensor ${name}: unknown dtype ${spec.dtype}`);
    const [begin, end] = spec.data_offsets;
    // Copy: the tensor's offset in the message need not be aligned for its typed array.
    const raw = bytes.slice(start + begin, start + end);
    tensors[name] = { dtype, shape: spec.shape, data: new Array_(raw.buffer) };
  }
  return { tensors, metadata: header.__metadata__ || {} };
}

// Lossless coding of a whole message, as dnnsplit/codecs.py does it. The browser's CompressionStream has
// gzip, deflate and deflate-raw (no zstd in Chromium 150), so the page codes with 'deflate': the zlib format,
// HTTP's "deflate" Content-Encoding, which the server (and Python's zlib) decodes.
export const PAGE_CODING = 'deflate';

async function through(bytes, stream) {
  const piped = new Blob([bytes]).stream().pipeThrough(stream);
  return new Uint8Array(await new Response(piped).arrayBuffer());
}

// bytes coded with coding ('identity' or 'deflate'), and the request headers that say so.
export async function pack(bytes, coding = PAGE_CODING) {
  if (coding === 'identity') return { body: bytes, headers: {} };
  const body = await through(bytes, new CompressionStream(coding));
  return { body, headers: { 'content-encoding': coding, 'x-decoded-length': String(bytes.length) } };
}

export async function unpack(bytes, coding = PAGE_CODING) {
  if (coding === 'identity') return bytes;
  return through(bytes, new DecompressionStream(coding));
}
