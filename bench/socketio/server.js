// The socket.io side of `volley-load premiere` (docs/BENCHMARKS.md): every client joins
// one room and each `chat` event is re-emitted to the whole room, as a premiere chat
// built on socket.io would do. Usage: node server.js [port] (or PORT=…; 0 picks one).
const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] ?? process.env.PORT ?? 3000);
const httpServer = http.createServer();
const io = new Server(httpServer);
io.on("connection", (socket) => {
  socket.join("premiere");
  socket.on("chat", (message) => io.to("premiere").emit("chat", message));
});
httpServer.listen(port, "127.0.0.1", () => {
  console.log(JSON.stringify({ pid: process.pid, port: httpServer.address().port }));
});
