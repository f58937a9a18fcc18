// ES module entry: `import WS4Redis from "/static/js/ws4redis.mjs"`.
// The implementation is the classic script next to this file; importing it defines the
// global, which is exported from here so both ways of loading share one copy.
import "./ws4redis.js";

const WS4Redis = globalThis.WS4Redis;
export { WS4Redis };
export default WS4Redis;
