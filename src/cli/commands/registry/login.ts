import { Args, Flags } from "@oclif/core";
import { AxonCommand } from "../../base.js";
import { hostOf, registryUrl } from "../../../axon/config.js";
import { AxonError, isAxonError } from "../../../axon/errors.js";
import { CredentialStore } from "../../../axon/registry/credentials.js";

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(typeof c === "string" ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
}

export interface LoginResult {
  host: string;
  username: string;
  /** Whether the registry was reached to check the credentials. */
  checked: boolean;
  /** Whether the registry accepted them (null when it could not be reached). */
  accepted: boolean | null;
  warning?: string;
}

export default class RegistryLogin extends AxonCommand {
  static override summary = "Store credentials for a registry and check them";
  static override description =
    "The password is read from stdin with --password-stdin, otherwise from AXON_REGISTRY_PASSWORD; it is never echoed or printed. Credentials go to $AXON_HOME/credentials.json (mode 0600). The registry is then asked to accept them: when it rejects them, they are removed again and the command fails with REGISTRY_AUTH; when it cannot be reached they are kept, with a warning.";
  static override examples = [
    { description: "Log in to GHCR with a token piped on stdin", command: "<%= config.bin %> registry login ghcr.io --username me --password-stdin < token.txt" },
    { description: "Log in to a configured registry, the password in AXON_REGISTRY_PASSWORD", command: "<%= config.bin %> registry login myreg --username me" },
    { description: "The result as JSON (accepted: true/false/null)", command: "<%= config.bin %> registry login 127.0.0.1:5000 -u admin --password-stdin --json < pw.txt" },
  ];
  static override args = { registry: Args.string({ description: "a configured registry name, or host[:port]", required: true }) };
  static override flags = {
    username: Flags.string({ char: "u", description: "user name (default: AXON_REGISTRY_USERNAME)" }),
    "password-stdin": Flags.boolean({ description: "read the password from stdin", default: false }),
  };

  async run(): Promise<LoginResult> {
    const { args, flags } = await this.parse(RegistryLogin);
    const username = flags.username ?? process.env.AXON_REGISTRY_USERNAME;
    if (!username) throw new AxonError("BAD_ARGUMENT", "no user name: give --username or set AXON_REGISTRY_USERNAME");
    const password = flags["password-stdin"] ? await readStdin() : process.env.AXON_REGISTRY_PASSWORD;
    if (!password) {
      throw new AxonError("BAD_ARGUMENT", flags["password-stdin"] ? "no password on stdin" : "no password: pipe it with --password-stdin or set AXON_REGISTRY_PASSWORD");
    }
    const axon = await this.axon();
    const reg = await axon.config.registry(args.registry);
    const url = registryUrl(reg.url, reg.insecure);
    const host = hostOf(url);
    const store = new CredentialStore(axon.paths.credentials);
    const previous = await store.get(host);
    await store.login(host, username, password);

    // Check exactly these credentials (not whatever the environment or Docker's config would add).
    const { OciRegistryClient } = await import("../../../axon/registry/oci-client.js");
    const client = new OciRegistryClient({ url, retries: 1, credentials: { get: async () => ({ username, password }) } });
    let result: LoginResult;
    try {
      await client.ping();
      result = { host, username, checked: true, accepted: true };
    } catch (e) {
      if (isAxonError(e) && e.code === "REGISTRY_AUTH") {
        // Put back what was there before (or nothing), so a typo does not replace working credentials.
        if (previous?.username !== undefined && previous.password !== undefined) await store.login(host, previous.username, previous.password);
        else await store.logout(host);
        throw new AxonError("REGISTRY_AUTH", `${host} rejected the credentials of ${username}; ${previous ? "the ones stored before are kept" : "nothing was stored"}`, { host, username });
      }
      const warning = `stored credentials for ${username}@${host}, but could not check them: ${(e as Error).message.split("\n")[0]}`;
      process.stderr.write(`warning: ${warning}\n`);
      result = { host, username, checked: false, accepted: null, warning };
    } finally {
      await client.close();
    }
    if (result.accepted) this.log(`logged in to ${host} as ${username} (credentials accepted)`);
    return result;
  }
}
