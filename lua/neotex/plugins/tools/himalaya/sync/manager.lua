return require('himalaya.sync.legacy').manager
