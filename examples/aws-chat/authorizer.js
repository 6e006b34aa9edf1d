// A Lambda REQUEST authorizer for $connect: `?token=allow` is allowed, anything else
// is denied, with an IAM policy for the event's methodArn (AWS's documented shape).
exports.handler = async (event) => {
  const token = (event.queryStringParameters || {}).token;
  const effect = token === 'allow' ? 'Allow' : 'Deny';
  return {
    principalId: 'user-' + (token || 'anonymous'),
    policyDocument: {
      Version: '2012-10-17',
      Statement: [{ Action: 'execute-api:Invoke', Effect: effect, Resource: event.methodArn }],
    },
    context: { token: String(token), allowed: effect === 'Allow' },
  };
};
