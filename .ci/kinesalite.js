// Starts kinesalite (an in-memory Kinesis API) on 127.0.0.1 only, for the Kinesis tests:
//   NODE_PATH=<kinesalite's node_modules> node .ci/kinesalite.js PORT
// Streams become ACTIVE at once (createStreamMs: 0) so tests need no waits.
const kinesalite = require('kinesalite');
const port = Number(process.argv[2]);
const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 1000 });
server.listen(port, '127.0.0.1', (err) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  console.log(`kinesalite listening on 127.0.0.1:${port}`);
});
// Stop cleanly on SIGINT/SIGTERM (services.sh stops by PID).
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
