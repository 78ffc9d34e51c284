return require('himalaya.sync.legacy').oauth
