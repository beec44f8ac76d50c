/**
 * Ollama's chat templates (Go text/template, as in a Modelfile's TEMPLATE) rewritten as Jinja
 * chat templates, the kind MLOS renders for every model (`messages`, `add_generation_prompt`).
 *
 * Ollama renders a template in one of two ways, and so does the Jinja it becomes:
 * - with `.Messages` (current templates): once, over `.System` (every system message, joined by
 *   blank lines) and `.Messages` (consecutive messages of one role merged), `.Response` empty;
 * - without (legacy templates, `.System` / `.Prompt` / `.Response`): once per user turn, `.System`
 *   on the first turn only, `.Response` the assistant's reply; the last turn stops right where
 *   `{{ .Response }}` would be, which is where generation starts.
 *
 * The Go template subset converted is what Ollama's library uses: text; `{{ .Field }}`,
 * `{{ $.Field }}`, `{{ $var }}`; `if` / `else if` / `else` / `end`; `range .Messages` (with `$i,
 * $x :=` or not); `$var := expr`; `eq`, `ne`, `and`, `or`, `not`, `len`, `slice`, `index`;
 * parentheses, string and number literals; `{{-` and `-}}` trimming. Anything else (tool
 * functions such as `json`, `with` blocks) throws UnsupportedTemplate, and the caller keeps the
 * model's own template instead.
 */

export class UnsupportedTemplate extends Error {}

/** Message fields as Go templates name them, and as Jinja chat templates do. */
const FIELDS: Record<string, string> = { Role: "role", Content: "content", ToolCalls: "tool_calls", Thinking: "thinking", Images: "images" };
/** Root values the converted template defines in its preamble. */
const ROOT = new Set(["System", "Messages", "Prompt", "Response", "Tools", "Think"]);

interface Action {
  kind: "text" | "action";
  text: string;
}

/** Splits a Go template into text and actions, applying `{{-` / `-}}` trimming to the text. */
function lex(src: string): Action[] {
  const out: Action[] = [];
  let i = 0;
  let trimNext = false;
  while (i < src.length) {
    const open = src.indexOf("{{", i);
    let text = open < 0 ? src.slice(i) : src.slice(i, open);
    if (trimNext) text = text.replace(/^\s+/, "");
    if (open < 0) {
      if (text) out.push({ kind: "text", text });
      break;
    }
    const close = src.indexOf("}}", open + 2);
    if (close < 0) throw new UnsupportedTemplate("an action is not closed (no }})");
    let body = src.slice(open + 2, close);
    if (body.startsWith("-") && /^-\s/.test(body)) {
      text = text.replace(/\s+$/, "");
      body = body.slice(1);
    }
    trimNext = false;
    if (/\s-$/.test(body)) {
      trimNext = true;
      body = body.slice(0, -1);
    }
    if (text) out.push({ kind: "text", text });
    body = body.trim();
    if (!body.startsWith("/*")) out.push({ kind: "action", text: body }); // comments vanish
    i = close + 2;
  }
  return out;
}

/** Tokens of one action's expression. */
function tokens(expr: string): string[] {
  const out: string[] = [];
  const re = /\s*("(?:[^"\\]|\\.)*"|`[^`]*`|\(|\)|:=|,|[^\s(),]+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(expr))) out.push(m[1]!);
  return out;
}

/** Converts expressions, given the name of the current `.` (the root, or a range's item). */
class Expr {
  #t: string[];
  #p = 0;
  constructor(
    text: string,
    private readonly dot: string,
  ) {
    this.#t = tokens(text);
  }
  get done(): boolean {
    return this.#p >= this.#t.length;
  }
  peek(): string | undefined {
    return this.#t[this.#p];
  }
  next(): string {
    const t = this.#t[this.#p++];
    if (t === undefined) throw new UnsupportedTemplate("an expression ends too soon");
    return t;
  }

  /** A whole pipeline: a function call with its arguments, or one operand. */
  pipeline(): string {
    const head = this.peek();
    if (head === undefined) throw new UnsupportedTemplate("an empty expression");
    if (["eq", "ne", "and", "or", "not", "len", "slice", "index"].includes(head)) {
      this.next();
      const args: string[] = [];
      while (!this.done && this.peek() !== ")") args.push(this.operand());
      return call(head, args);
    }
    const v = this.operand();
    if (!this.done && this.peek() !== ")") throw new UnsupportedTemplate(`unsupported call ${JSON.stringify(head)}`);
    return v;
  }

  operand(): string {
    const t = this.next();
    if (t === "(") {
      const inner = this.pipeline();
      if (this.next() !== ")") throw new UnsupportedTemplate("unbalanced parentheses");
      return `(${inner})`;
    }
    if (t.startsWith('"')) return JSON.stringify(JSON.parse(t) as string);
    if (t.startsWith("`")) return JSON.stringify(t.slice(1, -1));
    if (/^-?\d+(\.\d+)?$/.test(t)) return t;
    if (t === "true" || t === "false") return t;
    if (t === ".") {
      if (this.dot === "") throw new UnsupportedTemplate("{{ . }} at the top level");
      return this.dot;
    }
    if (t.startsWith("$.")) return field("", t.slice(2));
    if (t === "$") return "none";
    if (t.startsWith("$")) {
      const [name, ...rest] = t.slice(1).split(".");
      return rest.reduce((acc, f) => `${acc}.${FIELDS[f] ?? f}`, `v_${name}`);
    }
    if (t.startsWith(".")) return field(this.dot, t.slice(1));
    throw new UnsupportedTemplate(`unsupported function or value ${JSON.stringify(t)}`);
  }
}

/** `.A.B` relative to `dot` ("" = the root). */
function field(dot: string, path: string): string {
  const parts = path.split(".");
  const first = parts.shift()!;
  let base: string;
  if (dot === "" || dot === "none") {
    if (!ROOT.has(first)) throw new UnsupportedTemplate(`unknown value .${first}`);
    base = first;
  } else {
    base = `${dot}.${FIELDS[first] ?? first.toLowerCase()}`;
  }
  return parts.reduce((acc, f) => `${acc}.${FIELDS[f] ?? f}`, base);
}

function call(fn: string, a: string[]): string {
  const need = (n: number) => {
    if (a.length < n) throw new UnsupportedTemplate(`${fn} needs ${n} arguments`);
  };
  switch (fn) {
    case "eq":
      need(2);
      return `(${a.slice(1).map((b) => `${a[0]} == ${b}`).join(" or ")})`;
    case "ne":
      need(2);
      return `(${a[0]} != ${a[1]})`;
    case "and":
      need(1);
      return `(${a.join(" and ")})`;
    case "or":
      need(1);
      return `(${a.join(" or ")})`;
    case "not":
      need(1);
      return `(not ${a[0]})`;
    case "len":
      need(1);
      return `(${a[0]} | length)`;
    case "slice":
      need(1);
      return a.length === 1 ? a[0]! : a.length === 2 ? `${a[0]}[${a[1]}:]` : `${a[0]}[${a[1]}:${a[2]}]`;
    case "index":
      need(2);
      return `${a[0]}[${a[1]}]`;
    default:
      throw new UnsupportedTemplate(`unsupported function ${fn}`);
  }
}

/** The template's body as Jinja, without the preamble. */
function body(src: string): string {
  let out = "";
  const dots: string[] = [""];
  const blocks: Array<"if" | "for"> = [];
  let loops = 0;
  for (const a of lex(src)) {
    if (a.kind === "text") {
      out += a.text.replace(/\{\{|\{%|\{#/g, (m) => `{{ "${m}" }}`);
      continue;
    }
    const dot = dots[dots.length - 1]!;
    const t = a.text;
    const kw = t.split(/\s+/, 1)[0]!;
    if (kw === "if") {
      blocks.push("if");
      out += `{% if ${new Expr(t.slice(2), dot).pipeline()} %}`;
    } else if (kw === "else") {
      const rest = t.slice(4).trim();
      if (rest.startsWith("if ")) out += `{% elif ${new Expr(rest.slice(3), dot).pipeline()} %}`;
      else if (rest === "") out += "{% else %}";
      else throw new UnsupportedTemplate(`unsupported {{ ${t} }}`);
    } else if (kw === "end") {
      const b = blocks.pop();
      if (!b) throw new UnsupportedTemplate("{{ end }} without a block");
      if (b === "for") dots.pop();
      out += b === "if" ? "{% endif %}" : "{% endfor %}";
    } else if (kw === "range") {
      let rest = t.slice(5).trim();
      let index: string | undefined;
      let item = `it${loops++}`;
      const decl = /^\$(\w+)\s*(?:,\s*\$(\w+)\s*)?:=\s*(.*)$/.exec(rest);
      if (decl) {
        if (decl[2] !== undefined) {
          index = decl[1];
          if (decl[2] !== "_") item = `v_${decl[2]}`;
        } else item = `v_${decl[1]}`;
        rest = decl[3]!;
      }
      blocks.push("for");
      out += `{% for ${item} in ${new Expr(rest, dot).pipeline()} %}`;
      if (index !== undefined) out += `{% set v_${index} = loop.index0 %}`;
      dots.push(item);
    } else if (kw === "with" || kw === "define" || kw === "template" || kw === "block") {
      throw new UnsupportedTemplate(`unsupported {{ ${kw} }}`);
    } else {
      const assign = /^\$(\w+)\s*:?=\s*(.*)$/.exec(t);
      if (assign) out += `{% set v_${assign[1]} = ${new Expr(assign[2]!, dot).pipeline()} %}`;
      else out += `{{ ${new Expr(t, dot).pipeline()} }}`;
    }
  }
  if (blocks.length) throw new UnsupportedTemplate("a block is not closed with {{ end }}");
  return out;
}

/**
 * Preamble: System (the system messages), Messages (collated as Ollama does), Tools, Response.
 * No whitespace control here or in the legacy wrapper: their tags hold no whitespace between
 * them, and a `-` would eat the converted template's own leading or trailing whitespace.
 */
function preamble(defaultSystem: string | undefined): string {
  // A model's default system prompt (Modelfile SYSTEM) joins the messages when they have none.
  const msgs = defaultSystem === undefined ? "messages" : `(messages if (messages | selectattr("role", "equalto", "system") | list) else [{"role": "system", "content": ${JSON.stringify(defaultSystem)}}] + messages)`;
  return (
    `{% set ns = namespace(system="", msgs=[]) %}{% for m in ${msgs} %}` +
    '{% if m.role == "system" %}{% set ns.system = (ns.system + "\\n\\n" + m.content) if ns.system else m.content %}{% endif %}' +
    '{% if ns.msgs and ns.msgs[-1].role == m.role %}' +
    '{% set ns.msgs = ns.msgs[:-1] + [{"role": m.role, "content": ns.msgs[-1].content + "\\n\\n" + m.content}] %}' +
    '{% else %}{% set ns.msgs = ns.msgs + [{"role": m.role, "content": m.content}] %}{% endif %}' +
    "{% endfor %}" +
    '{% set System = ns.system %}{% set Messages = ns.msgs %}{% set Tools = tools if tools is defined else none %}{% set Response = "" %}{% set Think = false %}'
  );
}

/** Converts an Ollama template; throws UnsupportedTemplate when it uses what is not converted. */
export function ollamaTemplateToJinja(src: string, opts: { defaultSystem?: string } = {}): string {
  if (/\.Messages\b/.test(src)) return preamble(opts.defaultSystem) + body(src);
  // Legacy: one rendering per user turn; the last one ends where the response would start.
  const cut = /\{\{-?\s*\.Response\s*-?\}\}/.exec(src);
  const head = cut ? src.slice(0, cut.index) : src;
  const tail = cut ? src.slice(cut.index + cut[0].length) : "";
  if (/\.Response\b/.test(head) || /\.Response\b/.test(tail)) throw new UnsupportedTemplate("{{ .Response }} more than once");
  const headJ = body(head);
  const tailJ = body(tail);
  return (
    `{% set ns = namespace(system=${JSON.stringify(opts.defaultSystem ?? "")}, first=true, given=false) %}` +
    '{% for m in messages if m.role == "system" %}{% if not ns.given %}{% set ns.system = "" %}{% set ns.given = true %}{% endif %}{% set ns.system = (ns.system + "\\n\\n" + m.content) if ns.system else m.content %}{% endfor %}' +
    '{% set turns = messages | rejectattr("role", "equalto", "system") | list %}' +
    '{% for m in turns %}{% if m.role == "user" %}' +
    '{% set System = ns.system if ns.first else "" %}{% set Prompt = m.content %}{% set ns.first = false %}' +
    '{% set reply = turns[loop.index0 + 1] if loop.index0 + 1 < (turns | length) else none %}' +
    '{% set Response = reply.content if reply and reply.role == "assistant" else "" %}' +
    headJ +
    "{% if reply and reply.role == \"assistant\" %}{{ Response }}" +
    tailJ +
    "{% endif %}{% endif %}{% endfor %}"
  );
}
