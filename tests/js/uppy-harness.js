// In-browser side of tests/test_uppy.py: Uppy (@uppy/core + @uppy/tus, as pinned in
// tests/package.json) with its own defaults unless a test overrides them.  Bundled for
// the browser by esbuild at test time (tests/jsclient.py); the bundle is never committed.
//
//   uppyOpen(endpoint, tusOptions)  one Uppy with the Tus plugin
//   uppyStart()                     add the files chosen in #files and upload them;
//                                   window.uppyDone resolves with the outcome
//   window.uppyLog                  requests made ([method, url, Upload-Offset]), the most
//                                   requests of each method in flight at once, events
import Uppy from "@uppy/core";
import Tus from "@uppy/tus";

const log = { requests: [], inFlight: {}, maxInFlight: {}, events: [] };
window.uppyLog = log;

function track(method, delta) {
  log.inFlight[method] = (log.inFlight[method] || 0) + delta;
  log.maxInFlight[method] = Math.max(log.maxInFlight[method] || 0, log.inFlight[method]);
}

window.uppyOpen = function (endpoint, tusOptions) {
  const uppy = new Uppy();
  uppy.use(Tus, {
    endpoint,
    ...tusOptions,
    onBeforeRequest(req) {
      log.requests.push([req.getMethod(), req.getURL(), req.getHeader("Upload-Offset") || null]);
      track(req.getMethod(), 1);
    },
    onAfterResponse(req) {
      track(req.getMethod(), -1);
    },
  });
  uppy.on("upload-success", (file, response) => log.events.push(["success", file.name, response.uploadURL]));
  uppy.on("upload-error", (file, error, response) =>
    log.events.push(["error", file && file.name, String(error && error.message), response ? response.status : null]));
  window.uppy = uppy;
};

function summary(result) {
  return {
    successful: result.successful.map((file) => [file.name, file.response.uploadURL]),
    failed: result.failed.map((file) => [file.name, String(file.error)]),
  };
}

window.uppyStart = function () {
  for (const file of document.getElementById("files").files) {
    window.uppy.addFile({ name: file.name, type: file.type || "application/octet-stream", data: file });
  }
  window.uppyDone = window.uppy.upload().then(summary);
};
