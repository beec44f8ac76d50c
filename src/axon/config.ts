import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { AxonError } from "./errors.js";
import { AxonPaths } from "./paths.js";
import { writeFileAtomic } from "./util/fs.js";

export interface RegistryConfig {
  name: string;
  url: string;
  insecure?: boolean;
}

export interface AxonConfig {
  default_registry?: string;
  registries?: RegistryConfig[];
  concurrency?: number;
  retries?: number;
  hf_endpoint?: string;
}

/** Settings that `axon config get/set` manage (registries have their own commands). */
export const CONFIG_KEYS = {
  default_registry: { type: "string", default: "local", describe: "registry tried after the local store" },
  concurrency: { type: "integer", default: 4, describe: "parallel blob downloads per install" },
  retries: { type: "integer", default: 5, describe: "attempts after a network error or 5xx" },
  hf_endpoint: { type: "string", default: "https://huggingface.co", describe: "Hugging Face hub address (HF_ENDPOINT overrides)" },
} as const;
export type ConfigKey = keyof typeof CONFIG_KEYS;

const LOCALHOST = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/;

/** `host[:port]` or a URL -> a base URL: plain HTTP for localhost (as Docker does) or when insecure. */
export function registryUrl(hostOrUrl: string, insecure = false): string {
  if (/^https?:\/\//.test(hostOrUrl)) return hostOrUrl.replace(/\/+$/, "");
  const host = hostOrUrl.replace(/\/+$/, "");
  return `${LOCALHOST.test(host) || insecure ? "http" : "https"}://${host}`;
}

export function hostOf(url: string): string {
  return new URL(url).host;
}

let validator: ((c: unknown) => boolean) & { errors?: Array<{ instancePath: string; message?: string }> | null } | undefined;

async function validate(cfg: unknown, file: string): Promise<AxonConfig> {
  if (!validator) {
    const { default: Ajv } = await import("ajv");
    const require = createRequire(import.meta.url);
    const schema = require("../../../schemas/axon-config.schema.json");
    validator = new (Ajv as unknown as typeof import("ajv").default)({ allErrors: false }).compile(schema);
  }
  if (!validator(cfg)) {
    const e = validator.errors?.[0];
    throw new AxonError("CONFIG_INVALID", `${file}: ${e?.instancePath || "(root)"} ${e?.message ?? "is invalid"}`, { file });
  }
  return cfg as AxonConfig;
}

/** Reads and writes `$AXON_HOME/config.yaml`. */
export class ConfigStore {
  readonly #paths: AxonPaths;
  #cached: AxonConfig | undefined;

  constructor(paths: AxonPaths) {
    this.#paths = paths;
  }

  async read(): Promise<AxonConfig> {
    if (this.#cached) return this.#cached;
    let text: string;
    try {
      text = await readFile(this.#paths.config, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return (this.#cached = {});
      throw e;
    }
    const { parse } = await import("yaml");
    let data: unknown;
    try {
      data = parse(text) ?? {};
    } catch (e) {
      throw new AxonError("CONFIG_INVALID", `${this.#paths.config}: ${(e as Error).message.split("\n")[0]}`);
    }
    this.#cached = await validate(data, this.#paths.config);
    return this.#cached;
  }

  async write(cfg: AxonConfig): Promise<void> {
    await validate(cfg, this.#paths.config);
    const { stringify } = await import("yaml");
    await writeFileAtomic(this.#paths.config, stringify(cfg));
    this.#cached = cfg;
  }

  async get(key: ConfigKey): Promise<string | number> {
    const cfg = await this.read();
    return (cfg[key] as string | number | undefined) ?? CONFIG_KEYS[key].default;
  }

  async set(key: string, value: string): Promise<void> {
    if (!(key in CONFIG_KEYS)) {
      throw new AxonError("CONFIG_INVALID", `unknown setting '${key}' (known: ${Object.keys(CONFIG_KEYS).join(", ")}; registries: use 'axon registry')`);
    }
    const spec = CONFIG_KEYS[key as ConfigKey];
    let v: string | number = value;
    if (spec.type === "integer") {
      if (!/^\d+$/.test(value)) throw new AxonError("CONFIG_INVALID", `setting '${key}' must be an integer, got '${value}'`);
      v = Number(value);
    }
    const cfg = { ...(await this.read()), [key]: v };
    if (key === "default_registry" && value !== "local" && !cfg.registries?.some((r) => r.name === value)) {
      throw new AxonError("CONFIG_INVALID", `default_registry '${value}' is not a configured registry (see 'axon registry list')`);
    }
    await this.write(cfg);
  }

  async registries(): Promise<RegistryConfig[]> {
    return (await this.read()).registries ?? [];
  }

  /** A configured registry by name, or a host[:port]/URL made into an ad-hoc one. */
  async registry(nameOrHost: string): Promise<RegistryConfig> {
    const named = (await this.registries()).find((r) => r.name === nameOrHost);
    if (named) return named;
    if (/^https?:\/\//.test(nameOrHost) || nameOrHost.includes(".") || nameOrHost.includes(":") || nameOrHost === "localhost") {
      return { name: hostOf(registryUrl(nameOrHost)), url: registryUrl(nameOrHost) };
    }
    throw new AxonError("BAD_ARGUMENT", `unknown registry '${nameOrHost}' (configure it with 'axon registry add NAME URL' or give host:port)`);
  }
}
