// $connect: remember the new connection (AWS sample: DynamoDB PutItem).
const store = require('./store');

exports.handler = async (event) => {
  try {
    await store.put(event.requestContext.connectionId);
  } catch (err) {
    return { statusCode: 500, body: 'Failed to connect: ' + JSON.stringify(err) };
  }
  return { statusCode: 200, body: 'Connected.' };
};
