"""The keys keyrelay injects: env, file and command sources, tenant keys, key pools."""
