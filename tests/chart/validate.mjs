// Validates Kubernetes manifests (a JSON array, in the file named by the
// first argument) against the Kubernetes API schemas of kubernetes-models,
// and the Prometheus Operator's for ServiceMonitor. Prints one line per
// manifest; exits 1 if any is invalid or of a kind it has no schema for.
import { readFileSync } from "node:fs";

const manifests = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = false;
for (const manifest of manifests) {
  const { apiVersion, kind } = manifest;
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : [null, apiVersion];
  const module = group === "monitoring.coreos.com"
    ? `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`
    : `kubernetes-models/${group ? `${group}/` : ""}${version}/${kind}`;
  const name = `${kind}/${manifest.metadata?.name}`;
  try {
    const models = await import(module);
    new models[kind](manifest).validate();
    console.log(`valid ${name}`);
  } catch (error) {
    failed = true;
    console.log(`INVALID ${name}: ${error.message ?? error}`);
  }
}
process.exit(failed ? 1 : 0);
