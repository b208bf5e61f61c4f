/**
 * @module
 * A restricted pickle machine: enough of protocols 2-5 to read the state dicts torch.save writes,
 * and nothing that executes code. Globals are looked up in an allow-list the caller passes and
 * are only ever symbols; REDUCE, BUILD and persistent ids go to caller hooks that build plain
 * data. Any other global, or an opcode outside the supported set, stops the machine with an
 * AppError naming it. Also a small writer for the same subset (protocol 2).
 */
import { AppError } from "../../src/shared/errors.ts";

/** A global the stream referred to; a symbol, never resolved to code. */
export interface PickleGlobal {
  readonly kind: "global";
  readonly module: string;
  readonly name: string;
}

/** What the caller lets a pickle do. */
export interface PickleHooks {
  /** "module.name" of each global the stream may name. */
  allowedGlobals: ReadonlySet<string>;
  /** BINPERSID: turns a persistent id into a value. */
  persistentLoad(pid: unknown): unknown;
  /** REDUCE: `fn(*args)` for an allowed global. */
  reduce(fn: PickleGlobal, args: unknown[]): unknown;
  /** BUILD: sets `state` on `obj`; returns the object to leave on the stack. */
  build(obj: unknown, state: unknown): unknown;
}

/** Opcode names, for messages. */
const OPCODE_NAMES: Record<number, string> = {
  40: "MARK",
  46: "STOP",
  48: "POP",
  49: "POP_MARK",
  50: "DUP",
  70: "FLOAT",
  73: "INT",
  74: "BININT",
  75: "BININT1",
  76: "LONG",
  77: "BININT2",
  78: "NONE",
  80: "PERSID",
  81: "BINPERSID",
  82: "REDUCE",
  83: "STRING",
  84: "BINSTRING",
  85: "SHORT_BINSTRING",
  86: "UNICODE",
  88: "BINUNICODE",
  97: "APPEND",
  98: "BUILD",
  99: "GLOBAL",
  100: "DICT",
  125: "EMPTY_DICT",
  101: "APPENDS",
  103: "GET",
  104: "BINGET",
  105: "INST",
  106: "LONG_BINGET",
  108: "LIST",
  93: "EMPTY_LIST",
  111: "OBJ",
  112: "PUT",
  113: "BINPUT",
  114: "LONG_BINPUT",
  115: "SETITEM",
  116: "TUPLE",
  41: "EMPTY_TUPLE",
  117: "SETITEMS",
  71: "BINFLOAT",
  128: "PROTO",
  129: "NEWOBJ",
  130: "EXT1",
  131: "EXT2",
  132: "EXT4",
  133: "TUPLE1",
  134: "TUPLE2",
  135: "TUPLE3",
  136: "NEWTRUE",
  137: "NEWFALSE",
  138: "LONG1",
  139: "LONG4",
  66: "BINBYTES",
  67: "SHORT_BINBYTES",
  140: "SHORT_BINUNICODE",
  141: "BINUNICODE8",
  142: "BINBYTES8",
  143: "EMPTY_SET",
  144: "ADDITEMS",
  145: "FROZENSET",
  146: "NEWOBJ_EX",
  147: "STACK_GLOBAL",
  148: "MEMOIZE",
  149: "FRAME",
  150: "BYTEARRAY8",
  151: "NEXT_BUFFER",
  152: "READONLY_BUFFER",
};

function isGlobal(v: unknown): v is PickleGlobal {
  return typeof v === "object" && v !== null && (v as PickleGlobal).kind === "global";
}

/**
 * Runs the pickle in `bytes` and returns the value STOP leaves. `file` names the stream in errors.
 * Foreign globals fail with code "unsafe-pickle"; unsupported opcodes and malformed streams with
 * "unsupported-pickle" / "invalid-pytorch-bin".
 */
export function unpickle(bytes: Uint8Array, hooks: PickleHooks, file = "data.pkl"): unknown {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dec = new TextDecoder("utf-8");
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;

  const malformed = (what: string) =>
    new AppError(
      "invalid-pytorch-bin",
      422,
      `${file} is a malformed pickle: ${what} at byte ${pos}. Re-download the checkpoint.`,
      {
        file,
      },
    );
  const need = (n: number) => {
    if (pos + n > bytes.byteLength) throw malformed(`${n} more bytes needed but the stream ends`);
  };
  const u8 = () => {
    need(1);
    return bytes[pos++];
  };
  const u16 = () => {
    need(2);
    const v = view.getUint16(pos, true);
    pos += 2;
    return v;
  };
  const u32 = () => {
    need(4);
    const v = view.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const u64 = () => {
    need(8);
    const v = view.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed("a length over 2^53");
    return Number(v);
  };
  const take = (n: number) => {
    need(n);
    const out = bytes.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  const line = () => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) throw malformed("a newline-terminated name is not terminated");
    const s = dec.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = () => {
    if (stack.length === 0) throw malformed("the stack is empty");
    return stack.pop();
  };
  const top = () => {
    if (stack.length === 0) throw malformed("the stack is empty");
    return stack[stack.length - 1];
  };
  const popMark = () => {
    const items = stack;
    const prev = marks.pop();
    if (!prev) throw malformed("no MARK to pop to");
    stack = prev;
    return items;
  };
  const global = (module: string, name: string): PickleGlobal => {
    const full = `${module}.${name}`;
    if (!hooks.allowedGlobals.has(full))
      throw new AppError(
        "unsafe-pickle",
        422,
        `pickle global ${full} is not allowed in ${file}: a state dict may only name ${[...hooks.allowedGlobals].join(", ")}. Nothing was executed. If you trust the file, re-save it as safetensors and convert that.`,
        { file, global: full },
      );
    return { kind: "global", module, name };
  };
  const long = (b: Uint8Array): number | bigint => {
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b.length > 0 && b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const setItems = (dict: unknown, items: unknown[]) => {
    if (!(dict instanceof Map)) throw malformed("SETITEM(S) on something that is not a dict");
    if (items.length % 2) throw malformed("SETITEMS with an odd number of items");
    for (let i = 0; i < items.length; i += 2) dict.set(items[i], items[i + 1]);
  };
  const append = (list: unknown, items: unknown[]) => {
    if (!Array.isArray(list)) throw malformed("APPEND(S) on something that is not a list");
    list.push(...items);
  };

  for (;;) {
    const at = pos;
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) throw malformed("a pickle protocol above 5");
        break;
      case 0x95: // FRAME (length only; frames are contiguous in the stream)
        u64();
        break;
      case 0x2e: // STOP
        return pop();
      case 0x28: // MARK
        marks.push(stack);
        stack = [];
        break;
      case 0x30: // POP
        if (stack.length === 0) popMark();
        else pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88:
        stack.push(true);
        break;
      case 0x89:
        stack.push(false);
        break;
      case 0x4a: // BININT
        need(4);
        stack.push(view.getInt32(pos, true));
        pos += 4;
        break;
      case 0x4b:
        stack.push(u8());
        break;
      case 0x4d:
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(long(take(u8())));
        break;
      case 0x8b: {
        // LONG4
        const n = u32();
        if (n > 1024) throw malformed("a LONG4 integer over 1024 bytes");
        stack.push(long(take(n)));
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(view.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x58:
        stack.push(dec.decode(take(u32())));
        break;
      case 0x8c:
        stack.push(dec.decode(take(u8())));
        break;
      case 0x8d:
        stack.push(dec.decode(take(u64())));
        break;
      case 0x54: // BINSTRING (py2 str; decode as latin-1-ish UTF-8)
        stack.push(dec.decode(take(u32())));
        break;
      case 0x55:
        stack.push(dec.decode(take(u8())));
        break;
      case 0x42:
        stack.push(take(u32()).slice());
        break;
      case 0x43:
        stack.push(take(u8()).slice());
        break;
      case 0x8e:
        stack.push(take(u64()).slice());
        break;
      case 0x29:
        stack.push([]);
        break;
      case 0x74:
      case 0x6c: {
        // TUPLE / LIST (popMark swaps `stack`, so take the items first)
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x85:
        stack.push([pop()]);
        break;
      case 0x86: {
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x5d:
        stack.push([]);
        break;
      case 0x61: {
        const v = pop();
        append(top(), [v]);
        break;
      }
      case 0x65: {
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x7d:
        stack.push(new Map());
        break;
      case 0x64: {
        const d = new Map();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x73: {
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x63: {
        // GLOBAL "module\nname\n"
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: {
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string")
          throw malformed("STACK_GLOBAL without two strings");
        stack.push(global(module, name));
        break;
      }
      case 0x52: {
        const args = pop();
        const fn = pop();
        if (!isGlobal(fn)) throw malformed("REDUCE on something that is not an allowed global");
        if (!Array.isArray(args)) throw malformed("REDUCE without an argument tuple");
        stack.push(hooks.reduce(fn, args));
        break;
      }
      case 0x62: {
        const state = pop();
        stack.push(hooks.build(pop(), state));
        break;
      }
      case 0x51:
        stack.push(hooks.persistentLoad(pop()));
        break;
      case 0x71:
        memo.set(u8(), top());
        break;
      case 0x72:
        memo.set(u32(), top());
        break;
      case 0x94:
        memo.set(memo.size, top());
        break;
      case 0x68:
      case 0x6a: {
        const k = op === 0x68 ? u8() : u32();
        if (!memo.has(k)) throw malformed(`memo entry ${k} is read before it is written`);
        stack.push(memo.get(k));
        break;
      }
      default: {
        const name = OPCODE_NAMES[op];
        throw new AppError(
          "unsupported-pickle",
          422,
          `${file} uses pickle opcode ${name ?? "(unknown)"} (0x${op.toString(16).padStart(2, "0")}) at byte ${at}, which a torch state dict does not need; nothing was executed. Re-save the checkpoint with torch.save(model.state_dict()) or as safetensors.`,
          { file, opcode: op },
        );
      }
    }
  }
}

/**
 * Emits a protocol-2 pickle. Globals and repeated strings are memoized the way CPython's pickler
 * does (BINPUT on first use, BINGET after).
 */
export class PickleWriter {
  private buf = new Uint8Array(1 << 16);
  private len = 0;
  private readonly memo = new Map<string, number>();

  constructor() {
    this.bytes(0x80, 2);
  }

  private ensure(n: number) {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  /** Raw opcode bytes. */
  bytes(...b: number[]): this {
    this.ensure(b.length);
    for (const x of b) this.buf[this.len++] = x;
    return this;
  }

  private raw(b: Uint8Array) {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  private u32(n: number) {
    this.bytes(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  }

  private put(key: string) {
    const id = this.memo.size;
    this.memo.set(key, id);
    if (id < 256) this.bytes(0x71, id);
    else {
      this.bytes(0x72);
      this.u32(id);
    }
  }

  private get(key: string): boolean {
    const id = this.memo.get(key);
    if (id === undefined) return false;
    if (id < 256) this.bytes(0x68, id);
    else {
      this.bytes(0x6a);
      this.u32(id);
    }
    return true;
  }

  mark(): this {
    return this.bytes(0x28);
  }

  /** GLOBAL module.name, memoized. */
  global(module: string, name: string): this {
    const key = `g:${module}.${name}`;
    if (this.get(key)) return this;
    this.bytes(0x63);
    this.raw(new TextEncoder().encode(`${module}\n${name}\n`));
    this.put(key);
    return this;
  }

  /** BINUNICODE; `memoize` shares repeated constants like "storage" and "cpu". */
  string(s: string, memoize = false): this {
    const key = `s:${s}`;
    if (memoize && this.get(key)) return this;
    const b = new TextEncoder().encode(s);
    this.bytes(0x58);
    this.u32(b.length);
    this.raw(b);
    if (memoize) this.put(key);
    return this;
  }

  /** The smallest integer opcode that holds `n` (BININT1, BININT2, BININT, LONG1). */
  int(n: number): this {
    if (!Number.isSafeInteger(n)) throw new RangeError(`${n} is not a safe integer`);
    if (n >= 0 && n < 256) return this.bytes(0x4b, n);
    if (n >= 0 && n < 65536) return this.bytes(0x4d, n & 0xff, n >>> 8);
    if (n >= -(2 ** 31) && n < 2 ** 31) {
      this.bytes(0x4a);
      this.u32(n >>> 0);
      return this;
    }
    let v = BigInt(n);
    const out: number[] = [];
    do {
      out.push(Number(v & 0xffn));
      v >>= 8n;
    } while (!(v === 0n && (out[out.length - 1] & 0x80) === 0) && !(v === -1n && out[out.length - 1] & 0x80));
    return this.bytes(0x8a, out.length, ...out);
  }

  /** A tuple of small non-negative/negative integers (EMPTY_TUPLE, TUPLE1..3 or MARK..TUPLE). */
  intTuple(values: number[]): this {
    if (values.length === 0) return this.bytes(0x29);
    if (values.length > 3) this.mark();
    for (const v of values) this.int(v);
    if (values.length > 3) return this.bytes(0x74);
    return this.bytes(0x84 + values.length);
  }

  /** The pickle so far, STOP appended. */
  finish(): Uint8Array {
    this.bytes(0x2e);
    return this.buf.slice(0, this.len);
  }
}
