import { resolve } from "node:path";
import { defineConfig } from "vite";

// Django serves dist/ at STATIC_URL + "viewer/"; pages find hashed files via dist/.vite/manifest.json.
export default defineConfig({
  base: "/static/viewer/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    manifest: true,
    target: "es2022",
    chunkSizeWarningLimit: 4096,
    rollupOptions: {
      input: {
        main: resolve(__dirname, "src/main.ts"),
        harness: resolve(__dirname, "harness.html"),
      },
    },
  },
  // The DICOM image loader starts its decoders in ES-module workers.
  worker: { format: "es" },
  optimizeDeps: {
    exclude: ["@cornerstonejs/dicom-image-loader"],
    include: ["dicom-parser"],
  },
});
