/* tuswsgi upload page: a small tus 1.0.0 client for browsers, no dependencies.
 *
 * The endpoint comes from <body data-endpoint>, the default chunk size from
 * <body data-chunk-size> (bytes); the settings field overrides it.  Every upload
 * URL is kept in localStorage under a key made of the endpoint and the file's
 * name, size and lastModified, so choosing the same file again after a reload or
 * a crash continues where the server says it stopped (HEAD).
 */
(function () {
  "use strict";

  var TUS_VERSION = "1.0.0";
  var OCTET = "application/offset+octet-stream";
  var RETRY_DELAYS = [500, 1000, 2000, 4000, 8000, 15000, 30000];
  var MAX_ATTEMPTS = 15;               // failed tries in a row before asking the user
  var STALL_MS = 45000;                // a request that sends nothing for this long is retried
  var MIN_CHUNK = 64 * 1024;
  var STORAGE_PREFIX = "tuswsgi-upload:";
  var CHUNK_SETTING = "tuswsgi-chunk-mib";

  var body = document.body;
  var endpoint = new URL(body.getAttribute("data-endpoint") || "files/", document.baseURI).href;
  var defaultChunk = parseInt(body.getAttribute("data-chunk-size"), 10) || 8 * 1024 * 1024;
  var FINISHED_KEY = "tuswsgi-finished:" + endpoint;

  var $ = function (id) { return document.getElementById(id); };
  var fileInput = $("file-input");
  var dropZone = $("drop");
  var list = $("uploads");
  var chunkField = $("chunk-size");
  var announcer = $("announcer");
  var active = {};                     // storage key -> Upload, for files on this page

  /* -- small helpers --------------------------------------------------------- */

  var store = {
    get: function (key) {
      try { return JSON.parse(window.localStorage.getItem(key)); } catch (e) { return null; }
    },
    set: function (key, value) {
      try { window.localStorage.setItem(key, JSON.stringify(value)); } catch (e) { /* full or off */ }
    },
    remove: function (key) {
      try { window.localStorage.removeItem(key); } catch (e) { /* storage off */ }
    },
    keys: function () {
      var keys = [];
      try {
        for (var i = 0; i < window.localStorage.length; i++) keys.push(window.localStorage.key(i));
      } catch (e) { /* storage off */ }
      return keys;
    }
  };

  function fingerprint(file) {
    return STORAGE_PREFIX + JSON.stringify([endpoint, file.name, file.size, file.lastModified]);
  }

  function formatBytes(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)) + " " + units[i];
  }

  function formatDuration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + (seconds % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function base64(bytes) {
    var text = "";
    for (var i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return window.btoa(text);
  }

  function encodeMetadata(pairs) {
    var encoder = new TextEncoder();
    return Object.keys(pairs).map(function (key) {
      return key + " " + base64(encoder.encode(pairs[key]));
    }).join(",");
  }

  function announce(text) {
    // Clear first so that the same message twice is still read out.
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text; }, 50);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function chunkSize() {
    var mib = parseFloat(chunkField.value);
    var bytes = mib > 0 ? Math.round(mib * 1024 * 1024) : defaultChunk;
    return Math.max(MIN_CHUNK, bytes);
  }

  /* -- HTTP ------------------------------------------------------------------- */

  function HttpError(message, retry, status) {
    this.message = message;
    this.retry = retry;                // worth another try after re-reading the offset
    this.status = status || 0;
  }

  var ABORTED = { aborted: true };

  /* One request with XMLHttpRequest (fetch cannot report upload progress).
   * Resolves with the finished XHR whatever its status; rejects on network errors,
   * stalls and aborts.  `owner.xhr` lets pause and cancel abort it. */
  function send(owner, method, url, headers, data, onProgress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      var stalled = false;
      var watchdog = null;
      function arm() {
        window.clearTimeout(watchdog);
        watchdog = window.setTimeout(function () { stalled = true; xhr.abort(); }, STALL_MS);
      }
      function done() { window.clearTimeout(watchdog); if (owner) owner.xhr = null; }
      xhr.open(method, url, true);
      xhr.setRequestHeader("Tus-Resumable", TUS_VERSION);
      Object.keys(headers || {}).forEach(function (name) { xhr.setRequestHeader(name, headers[name]); });
      if (onProgress) {
        xhr.upload.onprogress = function (event) { arm(); onProgress(event.loaded); };
      }
      xhr.onload = function () { done(); resolve(xhr); };
      xhr.onerror = function () { done(); reject(new HttpError("network error", true)); };
      xhr.onabort = function () {
        done();
        reject(stalled ? new HttpError("the connection stalled", true) : ABORTED);
      };
      if (owner) owner.xhr = xhr;
      arm();
      xhr.send(data == null ? null : data);
    });
  }

  // Answers to a request that was cut short: the bytes that arrived are kept, so
  // re-reading the offset and going on is right (tuswsgi's and tusd's codes).
  var CUT_SHORT = /^(ERR_UPLOAD_INTERRUPTED|ERR_CLIENT_GONE|ERR_REQUEST_TIMEOUT|ERR_SERVER_SHUTDOWN)\b/;

  function retryable(status, detail) {
    // 409: the offset moved (e.g. a cut request was still being written),
    // 423: another request holds the upload, 460: checksum mismatch, 5xx: server trouble,
    // 400/408 with a "cut short" code: a newer request (maybe our own retry) took over.
    return status === 409 || status === 423 || status === 460 || status === 429 || status >= 500 ||
           ((status === 400 || status === 408) && CUT_SHORT.test(detail));
  }

  function failure(xhr, what) {
    var detail = (xhr.responseText || "").trim().split("\n")[0].slice(0, 200);
    return new HttpError(what + " failed: " + xhr.status + (detail ? " " + detail : ""),
                         retryable(xhr.status, detail), xhr.status);
  }

  /* What the server supports, asked once with OPTIONS. */
  var capabilities = null;
  function discover() {
    if (capabilities) return capabilities;
    var subtle = window.crypto && window.crypto.subtle;
    capabilities = send(null, "OPTIONS", endpoint, {}, null, null).then(function (xhr) {
      var algorithms = (xhr.getResponseHeader("Tus-Checksum-Algorithm") || "").toLowerCase().split(",")
        .map(function (s) { return s.trim(); });
      var extensions = (xhr.getResponseHeader("Tus-Extension") || "").split(",")
        .map(function (s) { return s.trim(); });
      var checksum = null;
      if (subtle && algorithms.indexOf("sha256") >= 0) checksum = ["sha256", "SHA-256"];
      else if (subtle && algorithms.indexOf("sha1") >= 0) checksum = ["sha1", "SHA-1"];
      return {
        checksum: checksum,
        creationWithUpload: extensions.indexOf("creation-with-upload") >= 0,
        termination: extensions.indexOf("termination") >= 0,
        maxSize: parseInt(xhr.getResponseHeader("Tus-Max-Size"), 10) || 0
      };
    }, function (error) {
      capabilities = null;             // ask again next time
      throw error;
    });
    return capabilities;
  }

  function checksumHeader(caps, data) {
    if (!caps.checksum || data.byteLength === 0) return Promise.resolve(null);
    return window.crypto.subtle.digest(caps.checksum[1], data).then(function (digest) {
      return caps.checksum[0] + " " + base64(new Uint8Array(digest));
    });
  }

  function readChunk(file, start, end) {
    var blob = file.slice(start, end);
    var read = blob.arrayBuffer ? blob.arrayBuffer() : new Response(blob).arrayBuffer();
    return read.catch(function () {
      throw new HttpError("the file can no longer be read (was it changed or moved?); choose it again",
                          false);
    });
  }

  function sleep(ms, owner) {
    return new Promise(function (resolve) {
      var timer = window.setTimeout(resolve, ms);
      owner.wake = function () { window.clearTimeout(timer); resolve(); };
    });
  }

  /* -- one upload --------------------------------------------------------------- */

  function Upload(file, key) {
    this.file = file;
    this.key = key;
    this.url = null;
    this.offset = 0;          // acknowledged by the server
    this.sent = 0;            // offset plus what the current request has sent so far
    this.needHead = false;
    this.attempt = 0;
    this.run = 0;             // bumped by pause/cancel: a stale loop stops at its next step
    this.xhr = null;
    this.wake = null;
    this.samples = [];
    this.milestone = 0;
    this.state = "waiting";
    this.build();
  }

  Upload.prototype.build = function () {
    var file = this.file;
    var item = el("li", "upload");
    var head = el("div", "upload-head");
    var name = el("span", "upload-name", file.name);
    var state = el("span", "upload-state", "Waiting");
    head.appendChild(name);
    head.appendChild(state);
    var bar = el("progress", "upload-bar");
    bar.max = Math.max(file.size, 1);
    bar.value = 0;
    bar.id = "progress-" + Math.random().toString(36).slice(2);
    name.id = bar.id + "-name";
    bar.setAttribute("aria-labelledby", name.id);
    var stats = el("p", "upload-stats", formatBytes(0) + " of " + formatBytes(file.size));
    var actions = el("div", "upload-actions");
    var pause = el("button", "button", "Pause");
    pause.type = "button";
    pause.setAttribute("aria-label", "Pause " + file.name);
    var cancel = el("button", "button danger", "Cancel");
    cancel.type = "button";
    cancel.setAttribute("aria-label", "Cancel " + file.name);
    actions.appendChild(pause);
    actions.appendChild(cancel);
    item.appendChild(head);
    item.appendChild(bar);
    item.appendChild(stats);
    item.appendChild(actions);
    var self = this;
    pause.addEventListener("click", function () {
      if (self.state === "paused" || self.state === "failed") self.start(); else self.pause();
    });
    cancel.addEventListener("click", function () { self.cancel(); });
    this.ui = { item: item, state: state, bar: bar, stats: stats, pause: pause, cancel: cancel };
    list.appendChild(item);
    refreshEmpty();
  };

  Upload.prototype.setState = function (state, label) {
    this.state = state;
    this.ui.item.setAttribute("data-state", state);
    this.ui.state.textContent = label;
    var resumable = state === "paused" || state === "failed";
    this.ui.pause.textContent = state === "failed" ? "Retry" : resumable ? "Resume" : "Pause";
    this.ui.pause.setAttribute("aria-label", this.ui.pause.textContent + " " + this.file.name);
    this.ui.pause.disabled = state === "cancelling";
    this.ui.cancel.disabled = state === "cancelling";
  };

  Upload.prototype.progress = function (sent) {
    var now = performance.now();
    this.sent = Math.min(sent, this.file.size);
    this.samples.push([now, this.sent]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift();
    if (!this.drawPending) {
      this.drawPending = true;
      var self = this;
      window.setTimeout(function () { self.drawPending = false; self.draw(); }, 150);
    }
  };

  Upload.prototype.draw = function () {
    var size = this.file.size;
    var sent = this.sent;
    this.ui.bar.value = size ? sent : 1;
    var percent = size ? Math.floor(sent * 100 / size) : 100;
    var text = formatBytes(sent) + " of " + formatBytes(size) + " (" + percent + " %)";
    if (this.state === "uploading" && this.samples.length > 1) {
      var first = this.samples[0];
      var last = this.samples[this.samples.length - 1];
      var seconds = (last[0] - first[0]) / 1000;
      if (seconds > 0.2) {
        var speed = (last[1] - first[1]) / seconds;
        text += " · " + formatBytes(speed) + "/s";
        if (speed > 0) text += " · " + formatDuration((size - sent) / speed) + " left";
      }
    }
    this.ui.stats.textContent = text;
    var step = Math.floor(percent / 25) * 25;    // announce every quarter, not every frame
    if (step > this.milestone && step < 100) {
      this.milestone = step;
      announce(this.file.name + ": " + step + " percent uploaded");
    }
  };

  Upload.prototype.start = function () {
    var run = ++this.run;
    this.attempt = 0;
    this.samples = [];
    if (this.url) this.needHead = true;
    this.setState("uploading", "Uploading");
    this.loop(run);
  };

  Upload.prototype.pause = function () {
    this.run++;
    if (this.xhr) this.xhr.abort();
    if (this.wake) this.wake();
    this.samples = [];
    this.sent = this.offset;
    this.setState("paused", "Paused");
    this.draw();
    announce(this.file.name + " paused");
  };

  Upload.prototype.loop = function (run) {
    var self = this;
    var file = this.file;
    var live = function () { return run === self.run; };
    var step = function () {
      if (!live()) return Promise.resolve();
      if (self.url && self.needHead) return self.head().then(step);
      if (!self.url) return self.create(live).then(step);
      if (self.offset < file.size) return self.patch(live).then(step);
      return Promise.resolve().then(function () { self.finish(); });
    };
    step().catch(function (error) {
      if (!live() || error === ABORTED) return;
      if (!(error instanceof HttpError) || !error.retry) {
        self.fail(error.message || String(error));
        return;
      }
      self.attempt++;
      if (self.attempt > MAX_ATTEMPTS) {
        self.fail("gave up after " + MAX_ATTEMPTS + " tries: " + error.message);
        return;
      }
      var delay = RETRY_DELAYS[Math.min(self.attempt - 1, RETRY_DELAYS.length - 1)];
      delay = Math.round(delay * (0.8 + Math.random() * 0.4));
      self.needHead = !!self.url;
      self.sent = self.offset;
      self.samples = [];
      self.setState("retrying", "Retrying in " + formatDuration(delay / 1000) + " (" + error.message + ")");
      self.draw();
      var waitOnline = navigator.onLine === false ? new Promise(function (resolve) {
        window.addEventListener("online", resolve, { once: true });
      }) : Promise.resolve();
      waitOnline.then(function () { return sleep(delay, self); }).then(function () {
        if (!live()) return;
        self.setState("uploading", "Uploading");
        self.loop(run);
      });
    });
  };

  /* Where does the server stand?  A gone or unknown upload starts over. */
  Upload.prototype.head = function () {
    var self = this;
    return send(this, "HEAD", this.url, {}, null, null).then(function (xhr) {
      if (xhr.status === 404 || xhr.status === 410) {
        self.forget();
        return;
      }
      if (xhr.status !== 200) throw failure(xhr, "HEAD");
      var length = xhr.getResponseHeader("Upload-Length");
      var offset = parseInt(xhr.getResponseHeader("Upload-Offset"), 10);
      if (isNaN(offset) || (length !== null && parseInt(length, 10) !== self.file.size)) {
        self.forget();                 // not this file's upload after all
        return;
      }
      self.needHead = false;
      self.offset = offset;
      self.progress(offset);
      self.samples = [];
    });
  };

  Upload.prototype.forget = function () {
    store.remove(this.key);
    this.url = null;
    this.offset = 0;
    this.sent = 0;
    this.needHead = false;
  };

  Upload.prototype.remember = function (url) {
    this.url = url;
    store.set(this.key, { url: url, name: this.file.name, size: this.file.size,
                          lastModified: this.file.lastModified, created: Date.now() });
  };

  /* POST, with the first chunk in the body (creation-with-upload) when possible. */
  Upload.prototype.create = function (live) {
    var self = this;
    var file = this.file;
    var caps;
    return discover().then(function (found) {
      caps = found;
      if (caps.maxSize && file.size > caps.maxSize) {
        throw new HttpError("the file is larger than the server accepts (" + formatBytes(caps.maxSize) + ")",
                            false);
      }
      var end = caps.creationWithUpload ? Math.min(chunkSize(), file.size) : 0;
      return end > 0 ? readChunk(file, 0, end) : null;
    }).then(function (data) {
      return (data ? checksumHeader(caps, data) : Promise.resolve(null)).then(function (checksum) {
        if (!live()) throw ABORTED;
        var headers = {
          "Upload-Length": String(file.size),
          "Upload-Metadata": encodeMetadata({ filename: file.name,
                                              filetype: file.type || "application/octet-stream" })
        };
        if (data) headers["Content-Type"] = OCTET;
        if (checksum) headers["Upload-Checksum"] = checksum;
        return send(self, "POST", endpoint, headers, data, function (loaded) { self.progress(loaded); });
      });
    }).then(function (xhr) {
      var location = xhr.getResponseHeader("Location");
      if (location) self.remember(new URL(location, endpoint).href);
      if (xhr.status !== 201 || !location) {
        if (location) self.needHead = true;   // interrupted: the server kept what arrived
        throw failure(xhr, "Creating the upload");
      }
      var offset = parseInt(xhr.getResponseHeader("Upload-Offset"), 10);
      if (isNaN(offset)) self.needHead = true; else self.acknowledge(offset);
    });
  };

  Upload.prototype.patch = function (live) {
    var self = this;
    var file = this.file;
    var start = this.offset;
    var end = Math.min(start + chunkSize(), file.size);
    var data;
    return Promise.all([discover(), readChunk(file, start, end)]).then(function (results) {
      data = results[1];
      return checksumHeader(results[0], data);
    }).then(function (checksum) {
      if (!live()) throw ABORTED;
      var headers = { "Upload-Offset": String(start), "Content-Type": OCTET };
      if (checksum) headers["Upload-Checksum"] = checksum;
      return send(self, "PATCH", self.url, headers, data, function (loaded) {
        self.progress(start + loaded);
      });
    }).then(function (xhr) {
      if (xhr.status === 404 || xhr.status === 410) {
        self.forget();                 // expired or removed meanwhile: start over
        return;
      }
      if (xhr.status !== 204 && xhr.status !== 200) throw failure(xhr, "PATCH");
      var offset = parseInt(xhr.getResponseHeader("Upload-Offset"), 10);
      if (isNaN(offset) || offset < start) {
        self.needHead = true;
        throw new HttpError("the server answered without a usable Upload-Offset", true);
      }
      self.acknowledge(offset);
    });
  };

  Upload.prototype.acknowledge = function (offset) {
    if (offset > this.offset) this.attempt = 0;   // progress was made: back-off starts afresh
    this.offset = offset;
    this.progress(offset);
  };

  Upload.prototype.finish = function () {
    this.run++;
    store.remove(this.key);
    delete active[this.key];
    this.setState("done", "Done");
    this.ui.item.remove();
    refreshEmpty();
    var finished = store.get(FINISHED_KEY) || [];
    finished.unshift({ name: this.file.name, size: this.file.size, url: this.url, at: Date.now() });
    store.set(FINISHED_KEY, finished.slice(0, 50));
    renderFinished();
    announce(this.file.name + " uploaded");
  };

  Upload.prototype.fail = function (message) {
    this.run++;
    this.setState("failed", "Failed: " + message);
    this.sent = this.offset;
    this.draw();
    announce(this.file.name + " failed: " + message);
  };

  Upload.prototype.cancel = function () {
    var self = this;
    this.run++;
    if (this.xhr) this.xhr.abort();
    if (this.wake) this.wake();
    this.setState("cancelling", "Cancelling");
    var url = this.url;
    var gone = function () {
      store.remove(self.key);
      delete active[self.key];
      self.ui.item.remove();
      refreshEmpty();
      announce(self.file.name + " cancelled");
      fileInput.value = "";
    };
    if (!url) { gone(); return; }
    terminate(url).then(gone, function (error) {
      self.setState("failed", "Could not cancel: " + error.message);
    });
  };

  /* DELETE, retried while the server is busy with the request we just aborted. */
  function terminate(url, attempt) {
    attempt = attempt || 0;
    return send(null, "DELETE", url, {}, null, null).then(function (xhr) {
      if (xhr.status === 204 || xhr.status === 200 || xhr.status === 404 || xhr.status === 410) return;
      throw failure(xhr, "DELETE");
    }).catch(function (error) {
      if (!error.retry || attempt >= 5) throw error;
      return new Promise(function (resolve) {
        window.setTimeout(resolve, RETRY_DELAYS[attempt]);
      }).then(function () { return terminate(url, attempt + 1); });
    });
  }

  /* -- lists --------------------------------------------------------------------- */

  function refreshEmpty() {
    $("nothing").hidden = list.children.length > 0;
  }

  function renderFinished() {
    var finished = store.get(FINISHED_KEY) || [];
    var target = $("finished-list");
    target.textContent = "";
    finished.forEach(function (entry) {
      var item = el("li");
      var link = el("a", null, entry.name);
      link.href = entry.url;
      link.setAttribute("download", entry.name);
      item.appendChild(link);
      item.appendChild(el("span", "small", " " + formatBytes(entry.size)));
      target.appendChild(item);
    });
    $("finished").hidden = finished.length === 0;
  }

  /* Uploads this browser started earlier and did not finish. */
  function renderUnfinished() {
    var target = $("unfinished-list");
    target.textContent = "";
    store.keys().forEach(function (key) {
      if (!key || key.indexOf(STORAGE_PREFIX) !== 0 || active[key]) return;
      var entry = store.get(key);
      var parts;
      try { parts = JSON.parse(key.slice(STORAGE_PREFIX.length)); } catch (e) { return; }
      if (!entry || !entry.url || parts[0] !== endpoint) return;
      var item = el("li", "unfinished");
      item.setAttribute("data-key", key);
      var text = el("span", null, entry.name + " (" + formatBytes(entry.size) + ")");
      var discard = el("button", "button", "Discard");
      discard.type = "button";
      discard.setAttribute("aria-label", "Discard the unfinished upload of " + entry.name);
      discard.addEventListener("click", function () {
        discard.disabled = true;
        terminate(entry.url).then(function () {
          store.remove(key);
          renderUnfinished();
          announce(entry.name + " discarded");
        }, function (error) {
          discard.disabled = false;
          announce("Could not discard " + entry.name + ": " + error.message);
        });
      });
      item.appendChild(text);
      item.appendChild(discard);
      target.appendChild(item);
      send(null, "HEAD", entry.url, {}, null, null).then(function (xhr) {
        if (xhr.status === 404 || xhr.status === 410) {
          store.remove(key);
          item.remove();
          $("unfinished").hidden = target.children.length === 0;
        } else if (xhr.status === 200) {
          var offset = parseInt(xhr.getResponseHeader("Upload-Offset"), 10) || 0;
          text.textContent = entry.name + ": " + formatBytes(offset) + " of " + formatBytes(entry.size);
        }
      }, function () { /* offline: keep it */ });
    });
    $("unfinished").hidden = target.children.length === 0;
  }

  function addFiles(files) {
    Array.prototype.forEach.call(files, function (file) {
      var key = fingerprint(file);
      if (active[key]) {
        announce(file.name + " is already in the list");
        return;
      }
      var upload = new Upload(file, key);
      active[key] = upload;
      var stored = store.get(key);
      if (stored && stored.url) {
        upload.url = stored.url;
        upload.needHead = true;
      }
      upload.start();
    });
    renderUnfinished();
    announce(files.length === 1 ? "Uploading " + files[0].name : "Uploading " + files.length + " files");
  }

  /* -- wiring -------------------------------------------------------------------- */

  var savedChunk = store.get(CHUNK_SETTING);
  chunkField.value = savedChunk || +(defaultChunk / 1048576).toFixed(4);
  chunkField.addEventListener("change", function () {
    if (parseFloat(chunkField.value) > 0) store.set(CHUNK_SETTING, chunkField.value);
    else { store.remove(CHUNK_SETTING); chunkField.value = +(defaultChunk / 1048576).toFixed(4); }
  });

  $("choose").addEventListener("click", function () { fileInput.click(); });
  fileInput.addEventListener("change", function () {
    if (fileInput.files.length) addFiles(fileInput.files);
  });

  function hasFiles(event) {
    var types = event.dataTransfer && event.dataTransfer.types;
    return types && Array.prototype.indexOf.call(types, "Files") >= 0;
  }
  // Dropping anywhere on the page uploads; the browser must not open the file instead.
  document.addEventListener("dragover", function (event) {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    dropZone.classList.add("dragging");
  });
  document.addEventListener("dragleave", function (event) {
    if (event.relatedTarget === null) dropZone.classList.remove("dragging");
  });
  document.addEventListener("drop", function (event) {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dropZone.classList.remove("dragging");
    var files = [];
    var items = event.dataTransfer.items;
    Array.prototype.forEach.call(event.dataTransfer.files, function (file, i) {
      var entry = items && items[i] && items[i].webkitGetAsEntry ? items[i].webkitGetAsEntry() : null;
      if (entry && entry.isDirectory) announce(file.name + " is a folder; choose the files inside it");
      else files.push(file);
    });
    if (files.length) addFiles(files);
  });

  $("clear-finished").addEventListener("click", function () {
    store.remove(FINISHED_KEY);
    renderFinished();
    $("choose").focus();
    announce("Finished list cleared");
  });

  window.addEventListener("beforeunload", function (event) {
    var busy = Object.keys(active).some(function (key) {
      var state = active[key].state;
      return state === "uploading" || state === "retrying";
    });
    // Nothing is lost (uploads resume), but the user may not know that.
    if (busy) {
      event.preventDefault();
      event.returnValue = "";
    }
  });

  renderFinished();
  renderUnfinished();
  body.setAttribute("data-ready", "");
})();
