// In-browser side of tests/test_tus_js_client.py: upload the chosen file with the
// browser build of tus-js-client and report the URL and the requests it made.
"use strict";

// extra.withCredentials sends the page's cookies with every request (cross-origin).
window.runUpload = function (endpoint, extra) {
  return new Promise(function (resolve, reject) {
    var file = document.getElementById("file").files[0];
    var requests = [];
    var options = Object.assign({}, extra || {});
    var withCredentials = Boolean(options.withCredentials);
    delete options.withCredentials;
    var upload = new tus.Upload(file, Object.assign({
      endpoint: endpoint,
      chunkSize: 2 * 1024 * 1024,
      retryDelays: [0, 300, 1000],
      storeFingerprintForResuming: false,
      metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
      onBeforeRequest: function (req) {
        if (withCredentials) req.getUnderlyingObject().withCredentials = true;
        requests.push([req.getMethod(), req.getURL(), req.getHeader("Upload-Concat") || null]);
      },
      onError: function (error) { reject(new Error(String(error))); },
      onSuccess: function () { resolve({ url: upload.url, requests: requests }); }
    }, options));
    upload.start();
  });
};
