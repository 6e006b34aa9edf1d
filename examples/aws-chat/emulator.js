// A minimal Lambda Invoke API for the example: `POST
// /2015-03-31/functions/{name or ARN}/invocations` calls `exports.handler` of
// ./{name}.js with the JSON event and answers its result as JSON (`null` when it
// returns nothing); a throw answers `X-Amz-Function-Error: Unhandled` with
// `{"errorMessage", "errorType"}`, as Lambda does. The `Authorization` header must
// have SigV4's shape for service `lambda` (else 403); the signature itself is not
// checked. Only Node's standard library is used.
//
// Usage: node emulator.js [port]    (default 3001, 0 = any free port; host 127.0.0.1)
// Prints `emulator listening on 127.0.0.1:PORT` once listening.
const http = require('http');
const path = require('path');
const fs = require('fs');

const MAX_BODY = 6 * 1024 * 1024; // Lambda's synchronous payload limit
const SIGV4 =
  /^AWS4-HMAC-SHA256 Credential=[^/\s,]+\/\d{8}\/[^/\s,]+\/lambda\/aws4_request, ?SignedHeaders=[a-z0-9;-]+, ?Signature=[0-9a-f]{64}$/;
const ROUTE = /^\/2015-03-31\/functions\/([^/]+)\/invocations$/;

/// The function name of a name, a partial ARN or a full ARN, without a qualifier.
function functionName(raw) {
  let name = decodeURIComponent(raw);
  const m = name.match(/(?:^|:)function:([^:]+)/);
  if (m) name = m[1];
  else name = name.split(':')[0];
  return /^[A-Za-z0-9_-]{1,64}$/.test(name) ? name : null;
}

function reply(res, status, body, headers = {}) {
  const data = Buffer.from(body === undefined ? 'null' : JSON.stringify(body));
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': data.length,
    'x-amzn-RequestId': Math.random().toString(16).slice(2),
    ...headers,
  });
  res.end(data);
}

function apiError(res, status, type, message) {
  reply(res, status, { Type: 'User', message }, { 'x-amzn-ErrorType': type });
}

async function invoke(name, raw, res) {
  const file = path.join(__dirname, name + '.js');
  if (!fs.existsSync(file) || name === 'emulator' || name === 'store') {
    return apiError(res, 404, 'ResourceNotFoundException', `Function not found: ${name}`);
  }
  let event;
  try {
    event = raw.length ? JSON.parse(raw) : {};
  } catch (e) {
    return apiError(res, 400, 'InvalidRequestContentException', 'Could not parse request body into json');
  }
  try {
    const result = await require(file).handler(event, { functionName: name });
    reply(res, 200, result === undefined ? null : result);
  } catch (e) {
    console.error(`${name}: ${e && e.stack ? e.stack : e}`);
    reply(
      res,
      200,
      { errorMessage: String(e && e.message !== undefined ? e.message : e), errorType: (e && e.name) || 'Error' },
      { 'X-Amz-Function-Error': 'Unhandled' }
    );
  }
}

const server = http.createServer((req, res) => {
  const m = req.url.split('?')[0].match(ROUTE);
  if (req.method !== 'POST' || !m) {
    return apiError(res, 404, 'ResourceNotFoundException', 'Unknown path');
  }
  if (!SIGV4.test(req.headers.authorization || '')) {
    return apiError(res, 403, 'InvalidSignatureException', 'Missing or malformed SigV4 Authorization header');
  }
  const name = functionName(m[1]);
  if (!name) {
    return apiError(res, 400, 'InvalidParameterValueException', 'Bad function name');
  }
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > MAX_BODY) {
      apiError(res, 413, 'RequestTooLargeException', 'Request must be smaller than 6291456 bytes');
      req.destroy();
      return;
    }
    chunks.push(c);
  });
  req.on('end', () => {
    if (size <= MAX_BODY) invoke(name, Buffer.concat(chunks).toString('utf8'), res);
  });
});

server.keepAliveTimeout = 60000;
const port = Number(process.argv[2] || process.env.PORT || 3001);
server.listen(port, '127.0.0.1', () => {
  console.log(`emulator listening on 127.0.0.1:${server.address().port}`);
});
