import { Args, Flags } from "@oclif/core";
import { AxonCommand } from "../../base.js";
import { hostOf, registryUrl, type RegistryConfig } from "../../../axon/config.js";
import { AxonError } from "../../../axon/errors.js";

const NAME = /^[a-z0-9][a-z0-9_-]*$/;
const RESERVED = new Set(["local", "hf"]);
const LOCALHOST = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/;

export default class RegistryAdd extends AxonCommand {
  static override summary = "Configure an OCI registry under a short name";
  static override description =
    "URL is host[:port] or http(s)://host[:port]. localhost and 127.0.0.1 are reached over plain HTTP, any other host over HTTPS unless --insecure. The name can then be used in references (NAME/ns/model) and with --registry.";
  static override examples = [
    "<%= config.bin %> registry add local5000 127.0.0.1:5000",
    "<%= config.bin %> registry add ghcr ghcr.io --default",
    "<%= config.bin %> registry add lab registry.lab.internal:5000 --insecure",
  ];
  static override args = {
    name: Args.string({ description: "short name (lower case letters, digits, '-' and '_')", required: true }),
    url: Args.string({ description: "host[:port] or URL of the registry", required: true }),
  };
  static override flags = {
    insecure: Flags.boolean({ description: "allow plain HTTP to a host that is not localhost", default: false }),
    default: Flags.boolean({ description: "make it the default registry (tried after the local store)", default: false }),
  };

  async run(): Promise<{ registry: RegistryConfig; default: boolean }> {
    const { args, flags } = await this.parse(RegistryAdd);
    if (!NAME.test(args.name)) throw new AxonError("BAD_ARGUMENT", `registry name '${args.name}' must be lower case letters, digits, '-' and '_' (starting with a letter or digit)`);
    if (RESERVED.has(args.name)) throw new AxonError("BAD_ARGUMENT", `registry name '${args.name}' is reserved`);
    const url = registryUrl(args.url.trim(), flags.insecure);
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new AxonError("BAD_ARGUMENT", `'${args.url}' is not a registry host or URL`);
    }
    if (!/^https?:\/\/[^/]+$/.test(url) || parsed.username || parsed.password || !parsed.host) {
      throw new AxonError("BAD_ARGUMENT", `'${args.url}' must be host[:port] or http(s)://host[:port], with no path or credentials`);
    }
    if (parsed.protocol === "http:" && !flags.insecure && !LOCALHOST.test(parsed.host)) {
      throw new AxonError("BAD_ARGUMENT", `plain HTTP to ${parsed.host} needs --insecure`);
    }
    const axon = await this.axon();
    const cfg = await axon.config.read();
    const registries = cfg.registries ?? [];
    const clash = registries.find((r) => r.name === args.name);
    if (clash) throw new AxonError("BAD_ARGUMENT", `registry '${args.name}' already exists (${clash.url}); remove it first with 'axon registry remove ${args.name}'`);
    const registry: RegistryConfig = { name: args.name, url, ...(flags.insecure ? { insecure: true } : {}) };
    await axon.config.write({ ...cfg, registries: [...registries, registry], ...(flags.default ? { default_registry: args.name } : {}) });
    this.log(`added registry ${args.name} -> ${url} (${hostOf(url)})${flags.default ? ", now the default" : ""}`);
    return { registry, default: flags.default };
  }
}
