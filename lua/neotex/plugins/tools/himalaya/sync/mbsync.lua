return require('himalaya.sync.mbsync')
