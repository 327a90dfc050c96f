{
  "targets": [
    {
      "target_name": "shim_native",
      "sources": [
        "src/addon.cc",
        "src/reaper.cc",
        "src/spawn.cc",
        "src/sys.cc",
        "src/unix.cc",
        "src/fdwatch.cc",
        "src/title.cc",
        "src/idmap.cc",
        "src/loop.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_CPP_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
        "_GNU_SOURCE"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "ldflags": ["-pthread"]
    },
    {
      "target_name": "shim-launcher",
      "type": "executable",
      "sources": ["launcher/launcher.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra"]
    }
  ]
}
