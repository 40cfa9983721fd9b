// Calling auditline from Node.js: grpc-js with the contract's .proto files, a session
// token as `authorization: Bearer`, and a refusal's rich details (google.rpc.Status in
// the `grpc-status-details-bin` trailer) decoded into its BadRequest field violations.
//
//   AUDITLINE_ACCESS_KEY=AK... AUDITLINE_SECRET_KEY=... node client.js [HOST:PORT]
//
// It prints one JSON line per step: the login, then the refusal of a bucket named
// against S3's rules.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_DIR = process.env.AUDITLINE_PROTO_DIR || path.join(__dirname, '..', '..', 'proto');
// google/rpc/status.proto and error_details.proto, as Google publishes them.
const GOOGLE_PROTOS = path.dirname(require.resolve('google-proto-files/package.json'));

const definition = protoLoader.loadSync(
  ['auditline/account/v1/auth.proto', 'auditline/account/v1/bucket.proto'],
  { includeDirs: [PROTO_DIR, GOOGLE_PROTOS], keepCase: true, defaults: true },
);
const account = grpc.loadPackageDefinition(definition).auditline.account.v1;
const rpc = protobuf.loadSync([
  path.join(GOOGLE_PROTOS, 'google/rpc/status.proto'),
  path.join(GOOGLE_PROTOS, 'google/rpc/error_details.proto'),
]);
const Status = rpc.lookupType('google.rpc.Status');

function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata || new grpc.Metadata(), (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

// The details of a refusal: each packed message of the google.rpc.Status, decoded.
function details(error) {
  const [bin] = error.metadata.get('grpc-status-details-bin');
  if (!bin) return [];
  return Status.decode(bin).details.map((any) => {
    const type = rpc.lookupType(any.type_url.split('/').pop());
    return { type: type.fullName.replace(/^\./, ''), ...type.toObject(type.decode(any.value)) };
  });
}

async function main() {
  const target = process.argv[2] || '127.0.0.1:50051';
  const credentials = grpc.credentials.createInsecure();
  const auth = new account.AuthService(target, credentials);
  const buckets = new account.BucketService(target, credentials);

  const session = await call(auth, 'Authenticate', {
    access_key: process.env.AUDITLINE_ACCESS_KEY,
    secret_key: process.env.AUDITLINE_SECRET_KEY,
  });
  console.log(JSON.stringify({ step: 'login', service_account: session.service_account }));

  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${session.token}`);
  try {
    await call(buckets, 'CreateBucket', { bucket_id: 'Not_A_Valid_Name' }, metadata);
    console.log(JSON.stringify({ step: 'create', refused: false }));
  } catch (error) {
    console.log(JSON.stringify({
      step: 'create',
      code: grpc.status[error.code],
      message: error.details,
      details: details(error),
    }));
  }
  auth.close();
  buckets.close();
}

main().catch((error) => {
  console.error(`error: ${grpc.status[error.code] || ''} ${error.details || error.message}`);
  process.exit(1);
});
