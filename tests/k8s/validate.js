// Validates Kubernetes objects offline against the API's OpenAPI schemas
// (kubernetes-models) and the Prometheus Operator's CRD schemas
// (@kubernetes-models/prometheus-operator: ServiceMonitor, PrometheusRule).
//
//   NODE_PATH=build/k8s-validate/node_modules node tests/k8s/validate.js FILE.json
//
// FILE.json: a JSON array of objects (the rendered overlay, converted by
// tests/k8s/check.py). Prints one line per object; exits 1 if any object
// is invalid or of a kind it has no schema for.
"use strict";
const fs = require("fs");

const modules = {
  "": require("kubernetes-models/v1"),
  apps: require("kubernetes-models/apps/v1"),
  policy: require("kubernetes-models/policy/v1"),
  "monitoring.coreos.com": require(
      "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1"),
};

const objects = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const obj of objects) {
  const [group, version] = obj.apiVersion.includes("/")
      ? obj.apiVersion.split("/") : ["", obj.apiVersion];
  const name = `${obj.apiVersion} ${obj.kind} ${obj.metadata && obj.metadata.name}`;
  const mod = modules[group];
  const Model = mod && mod[obj.kind];
  if (!Model || Model.apiVersion !== obj.apiVersion) {
    console.log(`NO SCHEMA ${name} (version ${version})`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`valid ${name}`);
  } catch (err) {
    console.log(`INVALID ${name}: ${err.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
