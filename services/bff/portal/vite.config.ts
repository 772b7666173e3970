// The portal's build: `npm run build` (make portal) type-checks, then writes dist/
// (index.html + content-hashed files in dist/assets/), which the BFF serves at /.
// `npm run dev` serves it with hot reload and sends /api to a BFF on 127.0.0.1:8090.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: { outDir: "dist", assetsDir: "assets", emptyOutDir: true, target: "es2022", sourcemap: false },
  server: { proxy: { "/api": { target: "http://127.0.0.1:8090", changeOrigin: false } } },
});
