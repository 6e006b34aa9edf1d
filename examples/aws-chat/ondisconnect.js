// $disconnect: forget the connection (AWS sample: DynamoDB DeleteItem).
const store = require('./store');

exports.handler = async (event) => {
  try {
    await store.delete(event.requestContext.connectionId);
  } catch (err) {
    return { statusCode: 500, body: 'Failed to disconnect: ' + JSON.stringify(err) };
  }
  return { statusCode: 200, body: 'Disconnected.' };
};
