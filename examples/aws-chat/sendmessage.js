// sendmessage: post the message's `data` to every stored connection through the
// API Gateway Management API, built from the event exactly as on AWS, and delete the
// ids that answer 410 GoneException (AWS sample: DynamoDB Scan + DeleteItem).
// WSGATE_PLAIN=1 selects http:// for a local gateway without TLS; that is the only
// change from the code deployed on AWS.
const {
  ApiGatewayManagementApiClient,
  PostToConnectionCommand,
} = require('@aws-sdk/client-apigatewaymanagementapi');
const store = require('./store');

exports.handler = async (event) => {
  let connectionData;
  try {
    connectionData = await store.scan();
  } catch (e) {
    return { statusCode: 500, body: e.stack };
  }

  const scheme = process.env.WSGATE_PLAIN === '1' ? 'http://' : 'https://';
  const apigwManagementApi = new ApiGatewayManagementApiClient({
    apiVersion: '2018-11-29',
    endpoint: scheme + event.requestContext.domainName + '/' + event.requestContext.stage,
  });

  const postData = JSON.parse(event.body).data;

  const postCalls = connectionData.map(async ({ connectionId }) => {
    try {
      await apigwManagementApi.send(
        new PostToConnectionCommand({ ConnectionId: connectionId, Data: postData })
      );
    } catch (e) {
      if (e.name === 'GoneException' || (e.$metadata && e.$metadata.httpStatusCode === 410)) {
        console.log(`Found stale connection, deleting ${connectionId}`);
        await store.delete(connectionId);
      } else {
        throw e;
      }
    }
  });

  try {
    await Promise.all(postCalls);
  } catch (e) {
    return { statusCode: 500, body: e.stack };
  }

  return { statusCode: 200, body: 'Data sent.' };
};
