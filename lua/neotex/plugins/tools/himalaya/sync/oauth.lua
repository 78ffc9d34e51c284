return require('himalaya.sync.oauth')
