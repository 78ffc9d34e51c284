return require('himalaya.sync.legacy').lock
