#!/usr/bin/env node
// Drives tus-js-client (Node build) against a tuswsgi server for tests/test_tus_js_client.py.
//
// Usage: node node-client.js '<json>' where the JSON has
//   mode:     "upload" | "abort" | "resume" | "terminate"
//   endpoint: the tus endpoint URL
//   file:     path of the file to upload
//   storage:  (abort, resume) path of a FileUrlStorage JSON file
//   stopAt:   (abort, terminate) stop once this many bytes are acknowledged
//   options:  further tus.Upload options (chunkSize, parallelUploads, ...)
// Prints one JSON line: {url, requests: [[method, url, headers]...], previous}.
"use strict";

const fs = require("fs");
const path = require("path");
const tus = require("tus-js-client");

const args = JSON.parse(process.argv[2]);
const requests = [];
const RECORDED = ["Upload-Offset", "Upload-Length", "Upload-Concat", "Upload-Checksum",
                  "Content-Type", "X-HTTP-Method-Override", "Tus-Resumable"];

function options(extra) {
  return {
    endpoint: args.endpoint,
    chunkSize: 1024 * 1024,
    retryDelays: [0, 300, 1000, 2000],
    metadata: { filename: path.basename(args.file), filetype: "application/octet-stream" },
    onBeforeRequest(req) {
      const headers = {};
      for (const name of RECORDED) {
        const value = req.getHeader(name);
        if (value !== undefined && value !== null) headers[name] = String(value);
      }
      requests.push([req.getMethod(), req.getURL(), headers]);
    },
    ...args.options,
    ...extra,
  };
}

function finish(result) {
  process.stdout.write(JSON.stringify({ requests, ...result }) + "\n");
  process.exit(0);
}

function die(error) {
  process.stderr.write(`tus-js-client failed: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
}

function source() {
  return fs.createReadStream(args.file);
}

function storage() {
  return new tus.FileUrlStorage(args.storage);
}

function upload() {
  const up = new tus.Upload(source(), options({
    onError: die,
    onSuccess: () => finish({ url: up.url }),
  }));
  up.start();
}

// Start an upload and stop it part-way; with terminate the upload is also DELETEd.
function stopPartWay(terminate) {
  let stopping = false;
  const up = new tus.Upload(source(), options({
    urlStorage: terminate ? undefined : storage(),
    storeFingerprintForResuming: !terminate,
    onError: die,
    onSuccess: () => die(new Error("finished before it could be stopped")),
    onChunkComplete(_chunk, accepted) {
      if (stopping || accepted < args.stopAt) return;
      stopping = true;
      up.abort(terminate).then(() => finish({ url: up.url, stoppedAt: accepted }), die);
    },
  }));
  up.start();
}

// A new Upload object, as after a restart: find the stored URL by fingerprint.
function resume() {
  const up = new tus.Upload(source(), options({
    urlStorage: storage(),
    onError: die,
    onSuccess: () => finish({ url: up.url, previous }),
  }));
  let previous = 0;
  up.findPreviousUploads().then((found) => {
    previous = found.length;
    if (found.length === 0) die(new Error("no previous upload found by fingerprint"));
    up.resumeFromPreviousUpload(found[0]);
    up.start();
  }, die);
}

switch (args.mode) {
  case "upload": upload(); break;
  case "abort": stopPartWay(false); break;
  case "terminate": stopPartWay(true); break;
  case "resume": resume(); break;
  default: die(new Error(`unknown mode ${args.mode}`));
}
