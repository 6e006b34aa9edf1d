// The connection table. AWS's sample keeps connection ids in DynamoDB; here they live
// in one JSON file (CONNECTIONS_FILE, default ./connections.json) shared by the
// handlers. Reads and writes are synchronous, so within the one emulator process no
// two handlers interleave inside an update.
const fs = require('fs');
const path = require('path');

const FILE = process.env.CONNECTIONS_FILE || path.join(__dirname, 'connections.json');

function load() {
  try {
    return JSON.parse(fs.readFileSync(FILE, 'utf8'));
  } catch (e) {
    if (e.code === 'ENOENT') return [];
    throw e;
  }
}

function save(ids) {
  const tmp = FILE + '.tmp';
  fs.writeFileSync(tmp, JSON.stringify(ids));
  fs.renameSync(tmp, FILE);
}

exports.put = async (connectionId) => {
  const ids = load();
  if (!ids.includes(connectionId)) ids.push(connectionId);
  save(ids);
};

exports.delete = async (connectionId) => {
  save(load().filter((id) => id !== connectionId));
};

exports.scan = async () => load().map((connectionId) => ({ connectionId }));
