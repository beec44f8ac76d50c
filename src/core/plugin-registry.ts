/**
 * The plugins every new Runtime starts with. The core knows no concrete plugin: the built-in ones
 * (src/plugins/index.ts) register themselves here when the library is imported, and an embedding
 * application may register its own the same way.
 */
import type { Plugin } from "./plugin.js";

const factories = new Map<string, () => Plugin>();

/** Makes every Runtime created from now on start with a plugin made by `factory` (one per runtime), under `id`. */
export function registerDefaultPlugin(id: string, factory: () => Plugin): void {
  factories.set(id, factory);
}

/** A fresh instance of each default plugin, in registration order. */
export function defaultPlugins(): Plugin[] {
  return [...factories.values()].map((make) => make());
}
