#!/usr/bin/env node
// Drives tus-js-client (Node build) against a tuswsgi server, for
// tests/test_tus_js_client.py (tus 1.0.0) and tests/test_tus_js_client_ietf.py.
//
// Usage: node node-client.js '<json>' where the JSON has
//   mode:      "upload" | "abort" | "resume" | "resume-url" | "terminate"
//   protocol:  (optional) "ietf-draft-03" | "ietf-draft-05"; tus 1.0.0 when absent
//   endpoint:  the upload endpoint URL
//   file:      path of the file to upload
//   storage:   (abort, resume) path of a FileUrlStorage JSON file
//   stopAt:    (abort, terminate) stop once this many bytes are acknowledged
//   uploadUrl: (resume-url) the upload URL to resume, as a new Upload would be given it
//   options:   further tus.Upload options (chunkSize, parallelUploads, ...)
// Prints one JSON line: {url, requests: [[method, url, headers, status]...], previous}.
"use strict";

const fs = require("fs");
const path = require("path");
const tus = require("tus-js-client");

const args = JSON.parse(process.argv[2]);
const requests = [];
const RECORDED = ["Upload-Offset", "Upload-Length", "Upload-Concat", "Upload-Checksum",
                  "Content-Type", "X-HTTP-Method-Override", "Tus-Resumable", "Upload-Complete",
                  "Upload-Incomplete", "Upload-Draft-Interop-Version"];

function options(extra) {
  return {
    endpoint: args.endpoint,
    ...(args.protocol ? { protocol: args.protocol } : {}),
    chunkSize: 1024 * 1024,
    retryDelays: [0, 300, 1000, 2000],
    metadata: { filename: path.basename(args.file), filetype: "application/octet-stream" },
    onBeforeRequest(req) {
      const headers = {};
      for (const name of RECORDED) {
        const value = req.getHeader(name);
        if (value !== undefined && value !== null) headers[name] = String(value);
      }
      requests.push([req.getMethod(), req.getURL(), headers, null]);
    },
    onAfterResponse(req, res) {
      for (let i = requests.length - 1; i >= 0; i--) {
        const entry = requests[i];
        if (entry[3] === null && entry[0] === req.getMethod() && entry[1] === req.getURL()) {
          entry[3] = res.getStatus();
          break;
        }
      }
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

// A new Upload object told the URL directly.
function resumeUrl() {
  const up = new tus.Upload(source(), options({
    uploadUrl: args.uploadUrl,
    storeFingerprintForResuming: false,
    onError: die,
    onSuccess: () => finish({ url: up.url }),
  }));
  up.start();
}

switch (args.mode) {
  case "upload": upload(); break;
  case "abort": stopPartWay(false); break;
  case "terminate": stopPartWay(true); break;
  case "resume": resume(); break;
  case "resume-url": resumeUrl(); break;
  default: die(new Error(`unknown mode ${args.mode}`));
}
