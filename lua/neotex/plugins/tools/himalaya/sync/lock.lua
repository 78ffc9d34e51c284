return require('himalaya.sync.lock')
