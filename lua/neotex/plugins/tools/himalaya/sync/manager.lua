return require('himalaya.sync.manager')
