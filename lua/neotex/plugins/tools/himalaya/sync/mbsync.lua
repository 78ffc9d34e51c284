return require('himalaya.sync.legacy').mbsync
