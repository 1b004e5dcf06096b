// A chunked PATCH whose Upload-Checksum follows the body as a trailer, sent by
// Node's own HTTP client (neither tus-js-client nor tuspy can send trailers).
// Usage: node node-trailer.js '{"url": ..., "offset": 0, "chunks": ["aGVs", ...],
//                               "checksum": "sha1 ...", "announce": true}'
// Prints {"status": ..., "headers": {...}, "body": "..."}.
'use strict'
const http = require('http')

const spec = JSON.parse(process.argv[2])
const headers = {
  'Tus-Resumable': '1.0.0',
  'Upload-Offset': String(spec.offset),
  'Content-Type': 'application/offset+octet-stream',
  'Transfer-Encoding': 'chunked',
}
if (spec.announce) headers.Trailer = 'Upload-Checksum'
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
const request = http.request(spec.url, { method: 'PATCH', headers, agent }, (response) => {
  let body = ''
  response.setEncoding('utf8')
  response.on('data', (data) => { body += data })
  response.on('end', () => {
    process.stdout.write(JSON.stringify({ status: response.statusCode, headers: response.headers, body }))
    agent.destroy()
  })
})
request.on('error', (error) => { console.error(error); process.exit(1) })
for (const chunk of spec.chunks) request.write(Buffer.from(chunk, 'base64'))
request.addTrailers({ 'Upload-Checksum': spec.checksum })
request.end()
