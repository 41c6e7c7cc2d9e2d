// Dev server: serves the client with hot reload and forwards the API and Socket.IO to a node
// (CHAT_URL, default http://127.0.0.1:3000), so the page and the node share one origin.
import { defineConfig } from "vite";

const target = process.env.CHAT_URL ?? "http://127.0.0.1:3000";

export default defineConfig({
  server: {
    port: 5173,
    proxy: {
      "/api": { target, changeOrigin: true },
      "/socket.io": { target, changeOrigin: true, ws: true },
    },
  },
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true },
});
